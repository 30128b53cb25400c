/*! fedibridge comments widget — shows fediverse replies under a blog article.
 *
 * Embed:  <script src="https://blog.example.org/fediverse/widget.js" data-article="ARTICLE_URL" async></script>
 * Optional attributes: data-lang="fr|en", data-theme="light|dark|auto" (default: inherit the page's colours).
 * Theme with CSS variables set on any ancestor: --fedibridge-accent, --fedibridge-text, --fedibridge-muted,
 * --fedibridge-bg, --fedibridge-border, --fedibridge-radius, --fedibridge-font.
 *
 * Safety: the only network requests are to the bridge that served this file and to the image URLs the bridge
 * returns. Comment HTML is sanitised by the server AND again here (defence in depth): it is parsed into an inert
 * document and rebuilt node by node from an allowlist; names, handles and summaries only ever go through
 * textContent. No innerHTML, no eval, no framework.
 */
(function () {
  "use strict";

  var STRINGS = {
    en: {
      heading: "Comments from the fediverse",
      loading: "Loading comments…",
      error: "The comments could not be loaded.",
      retry: "Try again",
      empty: "No comments yet. Be the first to reply from your fediverse account!",
      likes: function (n) { return n === 1 ? "like" : "likes"; },
      boosts: function (n) { return n === 1 ? "boost" : "boosts"; },
      quotes: function (n) { return n === 1 ? "quote" : "quotes"; },
      mentions: "Quoted on the fediverse",
      count: function (n) { return n === 1 ? "1 comment" : n + " comments"; },
      reactions: "Reactions",
      edited: "edited",
      deleted: "This comment was deleted.",
      cw: "Content warning:",
      showMedia: "Show sensitive media",
      hideMedia: "Hide sensitive media",
      attachment: "Attachment",
      replyTo: "In reply to",
      view: "View on the original server",
      replyHeading: "Reply from your fediverse account",
      replyHelp: "Mastodon, Pleroma, Akkoma, GoToSocial… Type your server (or your full handle) " +
        "and you will be able to reply, like or boost from there.",
      instanceLabel: "Your server or handle",
      instancePlaceholder: "mastodon.social or @you@example.social",
      replyButton: "Reply",
      invalid: "Please type a server name such as mastodon.social, or a handle such as @you@example.social.",
      opening: function (host) { return "Opening " + host + " in a new tab…"; },
      copyHeading: "Or search for this link on your server:",
      copyButton: "Copy link",
      copied: "Link copied.",
      copyFailed: "Copying failed: select the link and copy it by hand.",
      anonymous: "Someone"
    },
    fr: {
      heading: "Commentaires du fédivers",
      loading: "Chargement des commentaires…",
      error: "Les commentaires n’ont pas pu être chargés.",
      retry: "Réessayer",
      empty: "Aucun commentaire pour l’instant. Soyez la première ou le premier à répondre depuis votre compte du fédivers !",
      likes: function () { return "j’aime"; },
      boosts: function (n) { return n <= 1 ? "partage" : "partages"; },
      quotes: function (n) { return n <= 1 ? "citation" : "citations"; },
      mentions: "Cité sur le fédivers",
      count: function (n) { return n <= 1 ? n + " commentaire" : n + " commentaires"; },
      reactions: "Réactions",
      edited: "modifié",
      deleted: "Ce commentaire a été supprimé.",
      cw: "Avertissement :",
      showMedia: "Afficher le média sensible",
      hideMedia: "Masquer le média sensible",
      attachment: "Pièce jointe",
      replyTo: "En réponse à",
      view: "Voir sur le serveur d’origine",
      replyHeading: "Répondre depuis votre compte du fédivers",
      replyHelp: "Mastodon, Pleroma, Akkoma, GoToSocial… Indiquez votre serveur (ou votre identifiant complet) " +
        "pour répondre, aimer ou partager depuis celui-ci.",
      instanceLabel: "Votre serveur ou identifiant",
      instancePlaceholder: "mastodon.social ou @vous@exemple.social",
      replyButton: "Répondre",
      invalid: "Indiquez un nom de serveur comme mastodon.social, ou un identifiant comme @vous@exemple.social.",
      opening: function (host) { return "Ouverture de " + host + " dans un nouvel onglet…"; },
      copyHeading: "Ou recherchez ce lien sur votre serveur :",
      copyButton: "Copier le lien",
      copied: "Lien copié.",
      copyFailed: "La copie a échoué : sélectionnez le lien et copiez-le à la main.",
      anonymous: "Quelqu’un"
    }
  };

  // Tags kept from comment HTML (Mastodon's own set, roughly); everything else is unwrapped to its text.
  var ALLOWED = {
    P: 1, BR: 1, A: 1, SPAN: 1, STRONG: 1, EM: 1, B: 1, I: 1, U: 1, DEL: 1, S: 1, CODE: 1, PRE: 1,
    BLOCKQUOTE: 1, UL: 1, OL: 1, LI: 1
  };
  // Elements whose content is never text worth showing.
  var DROP = {
    SCRIPT: 1, STYLE: 1, TEMPLATE: 1, NOSCRIPT: 1, IFRAME: 1, OBJECT: 1, EMBED: 1, SVG: 1, MATH: 1,
    HEAD: 1, TITLE: 1, TEXTAREA: 1, SELECT: 1, FRAME: 1, FRAMESET: 1
  };
  // Mastodon's link-shortening and microformat classes (span.invisible hides "https://", span.ellipsis adds "…").
  var CLASSES = { mention: 1, hashtag: 1, "u-url": 1, "h-card": 1, invisible: 1, ellipsis: 1 };
  var LINK_REL = "nofollow ugc noopener noreferrer";
  var MAX_DEPTH = 4;
  var STORAGE_KEY = "fedibridge:instance";
  var counter = 0;

  var CSS = [
    // Unset variables make color/font-family fall back to inheritance: the widget wears the page's font and colours.
    ":host{display:block;margin:2em 0;line-height:1.5;color:var(--fedibridge-text);",
    "font-family:var(--fedibridge-font);--fb-accent:var(--fedibridge-accent,#5b57d1);",
    "--fb-muted:var(--fedibridge-muted,color-mix(in srgb,currentColor 68%,transparent));",
    "--fb-bg:var(--fedibridge-bg,transparent);",
    "--fb-border:var(--fedibridge-border,color-mix(in srgb,currentColor 20%,transparent));",
    "--fb-radius:var(--fedibridge-radius,8px);--fb-on-accent:#fff}",
    ":host([data-theme=light]){color-scheme:light;color:var(--fedibridge-text,#1d1d22);",
    "--fb-bg:var(--fedibridge-bg,#fff)}",
    ":host([data-theme=dark]){color-scheme:dark;color:var(--fedibridge-text,#e8e8ef);",
    "--fb-bg:var(--fedibridge-bg,#17171c);--fb-accent:var(--fedibridge-accent,#a5a2ff);--fb-on-accent:#111}",
    "@media (prefers-color-scheme:dark){:host([data-theme=auto]){color-scheme:dark;",
    "color:var(--fedibridge-text,#e8e8ef);--fb-bg:var(--fedibridge-bg,#17171c);",
    "--fb-accent:var(--fedibridge-accent,#a5a2ff);--fb-on-accent:#111}}",
    ":host([data-theme]) .fb{padding:1em;border-radius:var(--fb-radius)}",
    "*{box-sizing:border-box}",
    ".fb{background:var(--fb-bg)}",
    "h2{font-size:1.3em;margin:0 0 .5em}h3{font-size:1.05em;margin:0 0 .4em}",
    "a{color:var(--fb-accent)}",
    "a:focus-visible,button:focus-visible,input:focus-visible,summary:focus-visible{",
    "outline:2px solid var(--fb-accent);outline-offset:2px}",
    ".muted,.handle,time,.edited{color:var(--fb-muted)}",
    ".reactions{display:flex;gap:1em;list-style:none;margin:0 0 1em;padding:0}",
    ".reactions li{display:flex;gap:.3em;align-items:baseline}",
    "ol.thread,ol.replies{list-style:none;margin:0;padding:0}",
    "ol.replies{margin-top:.75em;padding-left:1.25em;border-left:2px solid var(--fb-border)}",
    "ol.replies.flat{padding-left:0;border-left:0}",
    "li.item{margin:0 0 .75em}",
    "article.comment{border:1px solid var(--fb-border);border-radius:var(--fb-radius);padding:.75em 1em}",
    "article.comment.deleted{font-style:italic}",
    "header{display:flex;gap:.6em;align-items:center;flex-wrap:wrap;margin-bottom:.4em}",
    ".avatar{width:40px;height:40px;border-radius:calc(var(--fb-radius)*.75);object-fit:cover;flex:none;",
    "display:inline-flex;align-items:center;justify-content:center;font-weight:bold;",
    "background:var(--fb-border);color:inherit}",
    ".who{display:flex;flex-direction:column;min-width:0;flex:1}",
    ".name{font-weight:bold;overflow-wrap:anywhere}.name a{color:inherit;text-decoration:none}",
    ".name a:hover{text-decoration:underline}",
    ".handle{font-size:.9em;overflow-wrap:anywhere}",
    ".meta{font-size:.85em;display:flex;gap:.5em;align-items:baseline}",
    ".meta a{color:inherit}",
    "img.emoji{height:1.2em;width:auto;vertical-align:-.2em;margin:0 .05em}",
    ".content{overflow-wrap:anywhere}.content p{margin:0 0 .6em}.content p:last-child{margin-bottom:0}",
    ".content .invisible{display:none}.content .ellipsis::after{content:'…'}",
    ".content blockquote{margin:.5em 0;padding-left:.8em;border-left:3px solid var(--fb-border)}",
    ".content pre{overflow:auto}",
    "details.cw summary{cursor:pointer;font-weight:bold}details.cw[open] summary{margin-bottom:.5em}",
    ".media{display:flex;flex-wrap:wrap;gap:.5em;margin-top:.6em}",
    ".media img{max-width:100%;max-height:22em;border-radius:calc(var(--fb-radius)*.75)}",
    "button{font:inherit;cursor:pointer;color:inherit;background:transparent;",
    "border:1px solid var(--fb-border);border-radius:var(--fb-radius);padding:.35em .8em}",
    "button.primary{background:var(--fb-accent);border-color:var(--fb-accent);color:var(--fb-on-accent)}",
    "form.reply,.copy{border-top:1px solid var(--fb-border);margin-top:1.25em;padding-top:1em}",
    ".row{display:flex;gap:.5em;flex-wrap:wrap}",
    "input{font:inherit;color:inherit;background:transparent;border:1px solid var(--fb-border);",
    "border-radius:var(--fb-radius);padding:.35em .6em;min-width:0;flex:1 1 16em}",
    "input[aria-invalid=true]{border-color:#c0392b}",
    "label{display:block;margin-bottom:.3em}",
    ".status:empty{display:none}.status{margin:.4em 0}"
  ].join("");

  /* ---------------------------------------------------------------------------------- helpers */

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var key in attrs) {
        if (Object.prototype.hasOwnProperty.call(attrs, key) && attrs[key] != null && attrs[key] !== false) {
          if (key === "text") node.textContent = String(attrs[key]);
          else node.setAttribute(key, attrs[key] === true ? "" : String(attrs[key]));
        }
      }
    }
    (children || []).forEach(function (child) {
      if (child != null) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  /** Only absolute http(s) URLs are ever used for links and images (no javascript:, data:, relative paths). */
  function safeUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      var url = new URL(value);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function externalLink(href, children, cls) {
    return el("a", { href: href, rel: LINK_REL, target: "_blank", "class": cls || null }, children);
  }

  function pickLang(script) {
    var wanted = script.getAttribute("data-lang") || document.documentElement.getAttribute("lang") ||
      (navigator.languages && navigator.languages[0]) || navigator.language || "en";
    var primary = String(wanted).toLowerCase().split(/[-_]/)[0];
    return { code: STRINGS[primary] ? primary : "en", locale: STRINGS[primary] ? wanted : "en" };
  }

  /** Emoji lists come as [[":code:", url], …] or [{shortcode, url}, …]; keep http(s) images only. */
  function emojiMap(list) {
    var map = {};
    (Array.isArray(list) ? list : []).forEach(function (item) {
      var code = Array.isArray(item) ? item[0] : item && (item.shortcode || item.name);
      var url = safeUrl(Array.isArray(item) ? item[1] : item && (item.url || item.static_url));
      if (typeof code === "string" && url) {
        code = code.replace(/^:|:$/g, "");
        if (/^[\w+-]+$/.test(code)) map[code] = url;
      }
    });
    return map;
  }

  /** Text with `:shortcode:` replaced by images, only for codes the API listed. */
  function emojify(text, map, target) {
    var re = /:([\w+-]+):/g;
    var last = 0;
    var match;
    while ((match = re.exec(text)) !== null) {
      if (!Object.prototype.hasOwnProperty.call(map, match[1])) continue;
      if (match.index > last) target.appendChild(document.createTextNode(text.slice(last, match.index)));
      target.appendChild(el("img", {
        src: map[match[1]], alt: match[0], title: match[0], "class": "emoji", draggable: "false",
        referrerpolicy: "no-referrer", decoding: "async"
      }));
      last = re.lastIndex;
    }
    if (last < text.length) target.appendChild(document.createTextNode(text.slice(last)));
    return target;
  }

  /** Rebuild untrusted HTML from an inert parse: allowlisted tags, http(s) links, text; nothing else. */
  function sanitize(html, emojis) {
    var out = document.createDocumentFragment();
    var doc = new DOMParser().parseFromString("<!doctype html><body>" + String(html || ""), "text/html");
    (function copy(from, to) {
      for (var n = from.firstChild; n; n = n.nextSibling) {
        if (n.nodeType === 3) {
          emojify(n.data, emojis, to);
        } else if (n.nodeType === 1) {
          var tag = n.tagName.toUpperCase();
          if (DROP[tag] || n.namespaceURI !== "http://www.w3.org/1999/xhtml") continue;
          if (!ALLOWED[tag]) {
            copy(n, to);  // unwrap: keep the text, lose the element
            continue;
          }
          var node;
          if (tag === "A") {
            var href = safeUrl(n.getAttribute("href"));
            if (!href) {
              node = document.createElement("span");
            } else {
              node = externalLink(href);
            }
          } else {
            node = document.createElement(tag.toLowerCase());
          }
          var classes = (n.getAttribute("class") || "").split(/\s+/).filter(function (c) { return CLASSES[c]; });
          if (classes.length) node.setAttribute("class", classes.join(" "));
          copy(n, node);
          to.appendChild(node);
        }
      }
    })(doc.body, out);
    return out;
  }

  function formatters(locale) {
    var rtf = null;
    var dtf = null;
    try { rtf = new Intl.RelativeTimeFormat(locale, { numeric: "auto" }); } catch (e) { rtf = null; }
    try {
      dtf = new Intl.DateTimeFormat(locale, { dateStyle: "long", timeStyle: "short" });
    } catch (e) {
      dtf = null;
    }
    return {
      relative: function (date) {
        var seconds = (date.getTime() - Date.now()) / 1000;
        var units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600],
          ["minute", 60], ["second", 1]];
        if (!rtf) return date.toLocaleString();
        for (var i = 0; i < units.length; i++) {
          if (Math.abs(seconds) >= units[i][1] || units[i][0] === "second") {
            return rtf.format(Math.round(seconds / units[i][1]), units[i][0]);
          }
        }
        return "";
      },
      absolute: function (date) { return dtf ? dtf.format(date) : date.toISOString(); }
    };
  }

  function parseDate(value) {
    if (typeof value !== "string") return null;
    var date = new Date(value);
    return isNaN(date.getTime()) ? null : date;
  }

  /** "@me@host", "me@host", "https://host/…" or "host" → "host" (punycode), or null if it is not a hostname. */
  function parseInstance(raw) {
    var value = String(raw || "").trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
    value = value.split(/[/?#]/)[0];
    if (value.indexOf("@") !== -1) value = value.slice(value.lastIndexOf("@") + 1);
    if (!value) return null;
    var host;
    try {
      host = new URL("https://" + value).host;
    } catch (e) {
      return null;
    }
    host = host.toLowerCase().replace(/\.$/, "");
    var label = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
    var re = new RegExp("^(?=.{1,253}(?::|$))" + label + "(?:\\." + label + ")+(?::\\d{1,5})?$");
    return re.test(host) ? host : null;
  }

  /** Mastodon's remote-interaction page; Pleroma/Akkoma and GoToSocial answer the same path. Misskey-family
   * servers have no equivalent: their users paste the article's link in their search (the "copy link" box). */
  function interactionUrl(host, objectId) {
    return "https://" + host + "/authorize_interaction?uri=" + encodeURIComponent(objectId);
  }

  function storageGet() {
    try { return window.localStorage.getItem(STORAGE_KEY) || ""; } catch (e) { return ""; }
  }

  function storageSet(value) {
    try { window.localStorage.setItem(STORAGE_KEY, value); } catch (e) { /* private mode: fine */ }
  }

  /* ---------------------------------------------------------------------------------- widget */

  function Widget(script) {
    this.script = script;
    this.id = "fb" + (++counter);
    var lang = pickLang(script);
    this.lang = lang.code;
    this.t = STRINGS[lang.code];
    this.fmt = formatters(lang.locale);
    this.article = script.getAttribute("data-article") || "";
    this.base = script.getAttribute("data-base") ||
      String(script.src).replace(/[?#].*$/, "").replace(/\/widget\.js$/, "");
    this.host = this.mount();
  }

  Widget.prototype.mount = function () {
    var host = document.getElementById("fedibridge-comments");
    if (!host || host.getAttribute("data-fedibridge-mounted")) {
      host = el("div", { "class": "fedibridge-comments" });
      this.script.parentNode.insertBefore(host, this.script.nextSibling);
    } else {
      host.classList.add("fedibridge-comments");
    }
    host.setAttribute("data-fedibridge-mounted", "");
    host.setAttribute("lang", this.lang);
    var theme = this.script.getAttribute("data-theme");
    if (theme) host.setAttribute("data-theme", theme);
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    if (root !== host && "adoptedStyleSheets" in root && typeof CSSStyleSheet === "function") {
      try {
        var sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        root.adoptedStyleSheets = [sheet];
      } catch (e) {
        root.appendChild(el("style", { text: CSS }));
      }
    } else {
      root.appendChild(el("style", { text: CSS.replace(/:host(\(([^)]*)\))?/g, ".fedibridge-comments$2") }));
    }
    this.headingId = this.id + "-h";
    this.section = el("section", { "class": "fb", "aria-labelledby": this.headingId, part: "container" });
    this.heading = el("h2", { id: this.headingId, part: "heading", text: this.t.heading });
    this.status = el("p", { "class": "status muted", role: "status", "aria-live": "polite" });
    this.body = el("div", { "class": "body" });
    this.section.appendChild(this.heading);
    this.section.appendChild(this.status);
    this.section.appendChild(this.body);
    root.appendChild(this.section);
    return host;
  };

  Widget.prototype.load = function () {
    var self = this;
    self.section.setAttribute("aria-busy", "true");
    self.status.textContent = self.t.loading;
    while (self.body.firstChild) self.body.removeChild(self.body.firstChild);
    var url = self.base + "/api/comments?url=" + encodeURIComponent(self.article);
    // "Accept: application/json" is CORS-safelisted: no preflight. No cookies are sent to the bridge.
    return fetch(url, { credentials: "omit", mode: "cors", headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (resp.status === 404) return { comments: [], total: 0, article: null };
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (data) {
        self.render(data || {});
      })
      .catch(function () {
        self.showError();
      })
      .then(function () {
        self.section.removeAttribute("aria-busy");
      });
  };

  Widget.prototype.showError = function () {
    var self = this;
    self.status.textContent = "";
    var retry = el("button", { type: "button", text: self.t.retry });
    retry.addEventListener("click", function () { self.load(); });
    self.body.appendChild(el("div", { "class": "error", role: "alert" }, [el("p", { text: self.t.error }), retry]));
  };

  Widget.prototype.render = function (data) {
    var t = this.t;
    var comments = Array.isArray(data.comments) ? data.comments : [];
    var total = typeof data.total === "number" ? data.total : countAll(comments);
    this.status.textContent = total ? t.count(total) : "";
    var reactions = data.reactions || {};
    var likes = Number(reactions.likes) || 0;
    var boosts = Number(reactions.boosts) || 0;
    var quotes = Number(reactions.quotes) || 0;
    if (likes || boosts || quotes) {
      var counts = [this.reaction("♥", likes, t.likes(likes), "likes"),
        this.reaction("🔁", boosts, t.boosts(boosts), "boosts")];
      if (quotes) counts.push(this.reaction("❝", quotes, t.quotes(quotes), "quotes"));
      this.body.appendChild(el("ul", { "class": "reactions", "aria-label": t.reactions, part: "reactions" }, counts));
    }
    if (comments.length) {
      this.body.appendChild(this.thread(comments, 1));
    } else {
      this.body.appendChild(el("p", { "class": "empty muted", part: "empty", text: t.empty }));
    }
    var mentions = Array.isArray(reactions.mentions) ? reactions.mentions : [];
    if (mentions.length) {
      // Quote posts with text (FEP-044f): shown like comments, under their own heading.
      this.body.appendChild(el("h3", { "class": "mentions-heading", text: t.mentions }));
      var list = this.thread(mentions, 1);
      list.setAttribute("class", "thread mentions");
      this.body.appendChild(list);
    }
    var article = data.article || {};
    var objectId = safeUrl(article.id);
    if (objectId) {
      this.body.appendChild(this.replyForm(objectId));
      this.body.appendChild(this.copyBox(objectId));
    }
  };

  Widget.prototype.reaction = function (symbol, count, label, cls) {
    return el("li", { "class": cls }, [
      el("span", { "aria-hidden": "true", text: symbol }),
      el("span", { "class": "count", text: String(count) }),
      el("span", { "class": "label muted", text: label })
    ]);
  };

  Widget.prototype.thread = function (comments, depth) {
    var list = el("ol", { "class": depth === 1 ? "thread" : "replies" + (depth > MAX_DEPTH ? " flat" : "") });
    for (var i = 0; i < comments.length; i++) {
      var c = comments[i];
      if (!c || typeof c !== "object") continue;
      var item = el("li", { "class": "item" }, [this.comment(c)]);
      if (Array.isArray(c.replies) && c.replies.length) item.appendChild(this.thread(c.replies, depth + 1));
      list.appendChild(item);
    }
    return list;
  };

  Widget.prototype.comment = function (c) {
    var t = this.t;
    var nameId = this.id + "-c" + (++counter);
    var node = el("article", {
      "class": "comment" + (c.deleted ? " deleted" : ""), "aria-labelledby": nameId, part: "comment",
      "data-comment-id": c.id != null ? String(c.id) : null
    });
    if (c.deleted) {
      node.appendChild(el("p", { id: nameId, "class": "muted", text: t.deleted }));
      return node;
    }
    var author = c.author || {};
    var emojis = emojiMap(author.emojis);
    var name = typeof author.name === "string" && author.name.trim() ? author.name : "";
    var handle = typeof author.handle === "string" ? author.handle : "";
    var profile = safeUrl(author.url);
    var nameNode = el("span", { "class": "name", id: nameId });
    var nameContent = emojify(name || handle || t.anonymous, emojis, document.createDocumentFragment());
    nameNode.appendChild(profile ? externalLink(profile, [nameContent]) : nameContent);

    var who = el("div", { "class": "who" }, [nameNode]);
    if (handle) who.appendChild(el("span", { "class": "handle", text: handle }));
    var header = el("header", null, [this.avatar(author, name || handle), who, this.meta(c)]);
    node.appendChild(header);

    var contentEmojis = emojiMap(c.emojis);
    var content = el("div", { "class": "content", part: "content" });
    var lang = typeof c.language === "string" && /^[a-z]{2,3}(-[a-z0-9]{1,8})*$/i.test(c.language) ? c.language : null;
    if (lang) content.setAttribute("lang", lang);
    content.appendChild(sanitize(c.content_html, contentEmojis));
    var media = this.media(c);
    var summary = typeof c.summary === "string" ? c.summary.trim() : "";
    if (summary) {
      var label = el("summary", null, [el("span", { "class": "muted", text: t.cw + " " }), el("span", { text: summary })]);
      node.appendChild(el("details", { "class": "cw", part: "cw" }, [label, content, media]));
    } else {
      node.appendChild(content);
      if (media) node.appendChild(media);
    }
    return node;
  };

  Widget.prototype.avatar = function (author, name) {
    var initial = Array.from(String(name).replace(/:[\w+-]+:/g, "").replace(/^@/, "").trim())[0] || "?";
    var fallback = el("span", { "class": "avatar", "aria-hidden": "true", text: initial.toUpperCase() });
    var src = safeUrl(author.avatar);
    if (!src) return fallback;
    // Decorative: the name next to it says who it is.
    var img = el("img", {
      "class": "avatar", src: src, alt: "", loading: "lazy", decoding: "async", width: "40", height: "40",
      referrerpolicy: "no-referrer"
    });
    img.addEventListener("error", function () {
      if (img.parentNode) img.parentNode.replaceChild(fallback, img);
    });
    return img;
  };

  Widget.prototype.meta = function (c) {
    var t = this.t;
    var meta = el("div", { "class": "meta" });
    var published = parseDate(c.published);
    if (published) {
      var time = el("time", {
        datetime: published.toISOString(), title: this.fmt.absolute(published), text: this.fmt.relative(published)
      });
      var permalink = safeUrl(c.url) || safeUrl(c.ap_id);
      meta.appendChild(permalink ? externalLink(permalink, [time], "permalink") : time);
      if (permalink) meta.lastChild.setAttribute("aria-label", t.view + " — " + time.title);
    }
    if (c.edited) {
      var updated = parseDate(c.updated);
      meta.appendChild(el("span", {
        "class": "edited", title: updated ? this.fmt.absolute(updated) : null, text: "(" + t.edited + ")"
      }));
    }
    return meta;
  };

  /** Images with their alt text; other media as links. Sensitive media are not even loaded until asked for. */
  Widget.prototype.media = function (c) {
    var t = this.t;
    var items = (Array.isArray(c.attachments) ? c.attachments : []).filter(function (a) { return a && safeUrl(a.url); });
    if (!items.length) return null;
    var box = el("div", { "class": "media", part: "media" });
    function fill() {
      items.forEach(function (a) {
        var url = safeUrl(a.url);
        var alt = typeof a.alt === "string" ? a.alt : "";
        var type = String(a.media_type || "");
        if (type.indexOf("image/") === 0 || (!type && /\.(png|jpe?g|gif|webp|avif)$/i.test(url))) {
          box.appendChild(externalLink(url, [el("img", {
            src: url, alt: alt, title: alt || null, loading: "lazy", decoding: "async", referrerpolicy: "no-referrer"
          })]));
        } else {
          box.appendChild(externalLink(url, [t.attachment + (alt ? " : " + alt : "")]));
        }
      });
    }
    if (!c.sensitive) {
      fill();
      return box;
    }
    var wrapper = el("div", { "class": "sensitive" });
    var button = el("button", { type: "button", "aria-expanded": "false", text: t.showMedia });
    box.hidden = true;
    button.addEventListener("click", function () {
      if (!box.firstChild) fill();
      box.hidden = !box.hidden;
      button.setAttribute("aria-expanded", String(!box.hidden));
      button.textContent = box.hidden ? t.showMedia : t.hideMedia;
    });
    wrapper.appendChild(button);
    wrapper.appendChild(box);
    return wrapper;
  };

  Widget.prototype.replyForm = function (objectId) {
    var t = this.t;
    var inputId = this.id + "-instance";
    var helpId = this.id + "-help";
    var msgId = this.id + "-msg";
    var headId = this.id + "-reply";
    var input = el("input", {
      id: inputId, name: "instance", type: "text", inputmode: "url", autocomplete: "off", autocapitalize: "none",
      spellcheck: "false", placeholder: t.instancePlaceholder, "aria-describedby": helpId + " " + msgId,
      value: storageGet()
    });
    var message = el("p", { id: msgId, "class": "status", "aria-live": "polite" });
    var form = el("form", { "class": "reply", "aria-labelledby": headId, novalidate: true, part: "reply" }, [
      el("h3", { id: headId, text: t.replyHeading }),
      el("p", { id: helpId, "class": "muted", text: t.replyHelp }),
      el("label", { "for": inputId, text: t.instanceLabel }),
      el("div", { "class": "row" }, [input, el("button", { type: "submit", "class": "primary", text: t.replyButton })]),
      message
    ]);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var host = parseInstance(input.value);
      if (!host) {
        input.setAttribute("aria-invalid", "true");
        message.textContent = t.invalid;
        input.focus();
        return;
      }
      input.removeAttribute("aria-invalid");
      input.value = host;
      storageSet(host);
      message.textContent = t.opening(host);
      window.open(interactionUrl(host, objectId), "_blank", "noopener,noreferrer");
    });
    return form;
  };

  Widget.prototype.copyBox = function (objectId) {
    var t = this.t;
    var fieldId = this.id + "-link";
    var field = el("input", { id: fieldId, type: "text", readonly: true, value: objectId, "class": "link" });
    var message = el("p", { "class": "status", "aria-live": "polite" });
    var button = el("button", { type: "button", text: t.copyButton });
    button.addEventListener("click", function () {
      function fallback() {
        field.focus();
        field.select();
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        message.textContent = ok ? t.copied : t.copyFailed;
      }
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(objectId).then(function () { message.textContent = t.copied; }, fallback);
      } else {
        fallback();
      }
    });
    return el("div", { "class": "copy" }, [
      el("label", { "for": fieldId, text: t.copyHeading }),
      el("div", { "class": "row" }, [field, button]),
      message
    ]);
  };

  function countAll(comments) {
    var n = 0;
    (comments || []).forEach(function (c) {
      if (c && !c.deleted) n += 1;
      if (c && Array.isArray(c.replies)) n += countAll(c.replies);
    });
    return n;
  }

  /* ---------------------------------------------------------------------------------- start */

  function scripts() {
    var found = [];
    var current = document.currentScript;
    if (current && current.getAttribute("data-article")) found.push(current);
    // async scripts may run when currentScript is already gone (or several widgets share one file)
    var all = document.querySelectorAll('script[src*="widget.js"][data-article]');
    for (var i = 0; i < all.length; i++) if (found.indexOf(all[i]) === -1) found.push(all[i]);
    return found.filter(function (s) { return !s.hasAttribute("data-fedibridge-started"); });
  }

  function start() {
    scripts().forEach(function (script) {
      script.setAttribute("data-fedibridge-started", "");
      new Widget(script).load();
    });
  }

  // Exposed for the tests and curious integrators; nothing depends on it.
  window.fedibridgeWidget = { parseInstance: parseInstance, interactionUrl: interactionUrl };
  start();
})();
