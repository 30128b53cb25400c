"""The site owner's moderation page in the browser, under `{prefix}/admin` (issue 14).

Server-rendered (Jinja2) with a little vanilla JS; its own session cookie, CSRF tokens and sign-in limit
(auth.py); the bearer-token API is untouched.
"""
