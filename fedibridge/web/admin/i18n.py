"""The admin page's words in English and French, and which of the two a request gets.

Accept-Language decides (highest q first); a browser asking for neither gets the blog's language, then
English. Strings are looked up by key so templates stay language-free.
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["en", "fr"]
SUPPORTED: tuple[Lang, ...] = ("en", "fr")

EN: dict[str, str] = {
    "admin": "Moderation", "skip": "Skip to content", "signin": "Sign in", "signout": "Sign out",
    "token": "Admin token or passphrase",
    "token_help": "The admin token (FEDIBRIDGE_ADMIN_TOKEN, or keys/admin-token), or the passphrase that "
                  "`fedibridge admin-passphrase` prints.",
    "wrong_token": "Wrong token.", "too_many": "Too many failed attempts; try again in {n} s.",
    "signed_out": "Signed out.", "session_needed": "Your session has ended: sign in again.",
    "csrf": "This form is stale or came from another site: reload the page and try again.",
    "comments": "Comments", "articles": "Articles", "followers": "Followers & delivery", "blocks": "Blocks",
    "pending": "Pending", "approved": "Approved", "rejected": "Rejected", "all": "All",
    "search": "Search text or author", "search_btn": "Search", "no_comments": "No comments here.",
    "approve": "Approve", "reject": "Reject", "delete": "Delete", "block_author": "Block author",
    "block_server": "Block server", "select_all": "Select all", "bulk": "With the selection:",
    "select": "Select comment {id}", "in_reply_to": "In reply to", "on_article": "On",
    "cw": "Content warning", "deleted": "(deleted)", "status": "Status", "visibility": "Visibility",
    "done.approved": "Approved.", "done.rejected": "Rejected.", "done.deleted": "Deleted.",
    "done.blocked": "Blocked {value}; {n} comment(s) rejected.", "done.unblocked": "Unblocked {value}.",
    "done.bulk": "{n} comment(s) updated.", "no_selection": "Select at least one comment.",
    "older": "Older", "newer": "Newer", "page": "Page {n}",
    "title": "Title", "likes": "Likes", "boosts": "Boosts", "n_comments": "Comments",
    "federation": "Federation", "fed.delivered": "delivered", "fed.pending": "pending",
    "fed.failing": "failing", "fed.none": "no deliveries", "fed.deleted": "deleted",
    "article_link": "Article", "object_link": "Fediverse object", "no_articles": "No articles yet.",
    "follower_count": "{n} follower(s)", "handle": "Handle", "server": "Server", "since": "Since",
    "no_followers": "No followers yet.", "queues": "Queues", "q.pending": "Deliveries waiting",
    "q.retrying": "Deliveries retrying", "q.failed": "Deliveries failed", "q.done": "Deliveries done",
    "q.inbox": "Incoming activities waiting", "failing_servers": "Failing servers", "last_error": "Last error",
    "next_retry": "Next retry", "state": "State", "no_failing": "No server is failing.",
    "unavailable": "Unavailable (skipped until they answer)", "kind": "Kind", "value": "Value",
    "domain": "Domain", "actor": "Actor", "add_block": "Add a block", "block_value": "Domain or actor URL",
    "add": "Block", "remove": "Remove", "configured": "from the configuration", "no_blocks": "No blocks.",
    "created": "Added", "error": "Error", "not_found": "No such comment.", "lang_name": "English",
}

FR: dict[str, str] = {
    "admin": "Modération", "skip": "Aller au contenu", "signin": "Se connecter", "signout": "Se déconnecter",
    "token": "Jeton d’administration ou phrase de passe",
    "token_help": "Le jeton d’administration (FEDIBRIDGE_ADMIN_TOKEN, ou keys/admin-token), ou la phrase de "
                  "passe qu’affiche `fedibridge admin-passphrase`.",
    "wrong_token": "Jeton incorrect.", "too_many": "Trop d’essais manqués ; réessayez dans {n} s.",
    "signed_out": "Déconnecté.", "session_needed": "Votre session a expiré : reconnectez-vous.",
    "csrf": "Ce formulaire est périmé ou vient d’un autre site : rechargez la page et recommencez.",
    "comments": "Commentaires", "articles": "Articles", "followers": "Abonnés et envois", "blocks": "Blocages",
    "pending": "En attente", "approved": "Approuvés", "rejected": "Refusés", "all": "Tous",
    "search": "Chercher un texte ou un auteur", "search_btn": "Chercher", "no_comments": "Aucun commentaire ici.",
    "approve": "Approuver", "reject": "Refuser", "delete": "Supprimer", "block_author": "Bloquer l’auteur",
    "block_server": "Bloquer le serveur", "select_all": "Tout sélectionner", "bulk": "Pour la sélection :",
    "select": "Sélectionner le commentaire {id}", "in_reply_to": "En réponse à", "on_article": "Sur",
    "cw": "Avertissement", "deleted": "(supprimé)", "status": "État", "visibility": "Visibilité",
    "done.approved": "Approuvé.", "done.rejected": "Refusé.", "done.deleted": "Supprimé.",
    "done.blocked": "{value} bloqué ; {n} commentaire(s) refusé(s).", "done.unblocked": "{value} débloqué.",
    "done.bulk": "{n} commentaire(s) modifié(s).", "no_selection": "Sélectionnez au moins un commentaire.",
    "older": "Plus anciens", "newer": "Plus récents", "page": "Page {n}",
    "title": "Titre", "likes": "J’aime", "boosts": "Partages", "n_comments": "Commentaires",
    "federation": "Fédération", "fed.delivered": "livré", "fed.pending": "en cours",
    "fed.failing": "en échec", "fed.none": "aucun envoi", "fed.deleted": "supprimé",
    "article_link": "Article", "object_link": "Objet du fédivers", "no_articles": "Aucun article pour l’instant.",
    "follower_count": "{n} abonné(s)", "handle": "Identifiant", "server": "Serveur", "since": "Depuis",
    "no_followers": "Aucun abonné pour l’instant.", "queues": "Files d’attente",
    "q.pending": "Envois en attente", "q.retrying": "Envois en nouvel essai", "q.failed": "Envois échoués",
    "q.done": "Envois réussis", "q.inbox": "Activités reçues en attente", "failing_servers": "Serveurs en échec",
    "last_error": "Dernière erreur", "next_retry": "Prochain essai", "state": "État",
    "no_failing": "Aucun serveur en échec.", "unavailable": "Indisponibles (ignorés jusqu’à ce qu’ils répondent)",
    "kind": "Type", "value": "Valeur", "domain": "Domaine", "actor": "Compte", "add_block": "Ajouter un blocage",
    "block_value": "Domaine ou URL du compte", "add": "Bloquer", "remove": "Retirer",
    "configured": "dans la configuration", "no_blocks": "Aucun blocage.", "created": "Ajouté", "error": "Erreur",
    "not_found": "Commentaire introuvable.", "lang_name": "Français",
}

WORDS: dict[Lang, dict[str, str]] = {"en": EN, "fr": FR}


def _ranges(header: str) -> list[tuple[float, int, str]]:
    out = []
    for i, part in enumerate(header.split(",")[:20]):  # bounded: a hostile header is cut, not parsed for long
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag:
            out.append((-q, i, tag.strip().lower()))
    return sorted(out)


def choose(accept_language: str | None, blog_language: str | None) -> Lang:
    """The first supported language the browser asks for (q > 0), else the blog's, else English."""
    for neg_q, _, tag in _ranges(accept_language or ""):
        primary = tag.split("-", 1)[0]
        if neg_q < 0 and primary in SUPPORTED:
            return primary
    primary = (blog_language or "").lower().split("-", 1)[0]
    return primary if primary in SUPPORTED else "en"


class Words:
    """Callable in templates: ``t("key", n=3)``; a missing key shows itself rather than failing the page."""

    def __init__(self, lang: Lang) -> None:
        self.lang = lang
        self._words = WORDS[lang]

    def __call__(self, key: str, **values: object) -> str:
        text = self._words.get(key) or EN.get(key) or key
        return text.format(**values) if values else text
