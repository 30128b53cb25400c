"""aiohttp handlers only: parse the request, call a module, render the answer."""
