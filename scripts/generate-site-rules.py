#!/usr/bin/env python3
"""Generate Sources/FanficCore/Sites/SiteRulesData.swift from the installed FanFicFare.

FanFicFare is the authority on which URLs are stories and what a story's canonical URL is, but
it decides in Python code, adapter by adapter. This script turns each adapter into data the
Swift side (SiteRules.swift) applies:

- site: the adapter's config section (the lock key), domains it accepts, the URL fragment that
  picks between adapters sharing a domain, whether it drops `&` parameters;
- pattern: its story URL regex (Python syntax converted to ICU);
- templates: how the canonical URL is built, inferred by running FanFicFare's own
  getNormalStoryURL on the adapter's example URLs and the spellings people paste (http/https,
  www./m./none, trailing slash, chapter paths and parameters, fragments, extra parameters, title
  slugs). A template names features of the fixed-up URL: the pattern's groups (by name or
  number), query parameters (`?sid`), path segments (`@0`, `@1`, `@last`) and URL parts
  (`@scheme`, `@host`, `@path`, `@query`, `@rest`, `@tail` = what follows the pattern's match).
  For each set of named groups that matched, every template that reproduces some answer is
  scored against all answers of that set and the best (then the simplest) is kept; `overrides`
  hold a better template for one exact set of matched groups (named and numbered), or "" where
  FanFicFare itself must ask the site (wattpad chapter links): such URLs pass through as given,
  and the worker learns the story's URL from the EPUB.

The generator never touches the network: FanFicFare's requests fail at once, and the URLs that
needed one are marked.

`--check` prints one JSON object: the rules as this FanFicFare generates them, and for every
example and spelling FanFicFare's answer; the Swift test compares its own answers with these
(SiteRulesAgreementTests).
"""
import collections
import functools
import json
import logging
import re
import sys

logging.disable(logging.CRITICAL)

import fanficfare.requestable  # noqa: E402
import fanficfare.adapters as adapters  # noqa: E402
from fanficfare.adapters import _get_class_for, getNormalStoryURL, lightweight_adapter  # noqa: E402


class SiteNeeded(Exception):
    """Raised instead of any request FanFicFare would make: the generator is offline."""


_asked_site = [False]


def _offline(*args, **kwargs):
    _asked_site[0] = True
    raise SiteNeeded()


for _name in ("get_request", "post_request", "get_request_redirected", "get_request_raw"):
    setattr(fanficfare.requestable.Requestable, _name, _offline)


def adapter_classes():
    return list(getattr(adapters, "__class_list"))


# MARK: the spellings people paste

def host_variants(url):
    """http and https, with www., m. or neither."""
    out = {url}
    for a, b in (("https://", "http://"), ("http://", "https://")):
        if url.startswith(a):
            out.add(b + url[len(a):])
    for u in list(out):
        m = re.match(r"^(https?://)(www\.|m\.)?(.*)$", u)
        if m:
            rest = m.group(3)
            out |= {m.group(1) + rest, m.group(1) + "www." + rest, m.group(1) + "m." + rest}
    return out


def spellings(url):
    """Trailing slash, fragments, `&` and share parameters, chapter paths and parameters, slugs."""
    out = {url}
    m = re.match(r"^(https?://[^/?#]*)([^?#]*)(\?[^#]*)?$", url)
    if not m:
        return out
    origin, path, query = m.group(1), m.group(2), m.group(3) or ""
    if path.endswith("/") and len(path) > 1:
        out.add(origin + path[:-1] + query)
    else:
        out.add(origin + path + "/" + query)
    out |= {url + "#reviews", url + "#chapter-2"}
    if query:
        out |= {url + "&chapter=3", url + "&utm_source=share"}
        chapter = re.sub(r"((?:chapter|chapid|ch|chap)=)\d+", r"\g<1>4", query)
        if chapter != query:
            out.add(origin + path + chapter)
    else:
        out.add(url + "?utm_source=share")
    segments = path.split("/")
    # A chapter number after a numeric id (/s/1234/1/ -> /s/1234/7/).
    for i in range(1, len(segments)):
        if segments[i].isdigit() and segments[i - 1].isdigit():
            changed = list(segments)
            changed[i] = str(int(segments[i]) + 6)
            out.add(origin + "/".join(changed) + query)
    numeric = [i for i, s in enumerate(segments) if s.isdigit()]
    if numeric and not query:
        i = numeric[-1]
        if i == len(segments) - 1 or (i == len(segments) - 2 and segments[-1] == ""):
            base = "/".join(segments[: i + 1])
            out |= {origin + base + "/chapters/987654", origin + base + "/3"}
    named = [s for s in segments if s]
    if named and not query:
        tail = named[-1]
        if (not tail.isdigit() and re.search(r"[A-Za-z]", tail)
                and not tail.endswith((".php", ".html", ".htm", ".aspx", ".asp"))):
            changed = list(segments)
            changed[max(i for i, s in enumerate(segments) if s)] = "Another-Title_here"
            out.add(origin + "/".join(changed))
        elif tail.isdigit():
            out.add(origin + path.rstrip("/") + "/Some-Story-Title")
    return out


def variants(url):
    out = set()
    for u in host_variants(url):
        out |= spellings(u)
    return sorted(out)


@functools.lru_cache(maxsize=None)
def answers(cls):
    """(input, FanFicFare's canonical URL or None, the fixed-up URL if this adapter takes it,
    whether FanFicFare had to ask the site) for every example URL and spelling."""
    out = []
    for example in cls.getSiteExampleURLs().split():
        for url in variants(example):
            chosen, fixed = _get_class_for(url)
            _asked_site[0] = False
            normal = getNormalStoryURL(url)
            out.append((url, normal, fixed if chosen is cls else None, _asked_site[0]))
    return out


def samples():
    """(site, input, FanFicFare's canonical URL or None, needed the site) for every spelling."""
    for cls in adapter_classes():
        for url, normal, _, asked in answers(cls):
            yield cls.getConfigSection(), url, normal, asked


# MARK: features and templates (SiteRules.swift computes the same features)

URL_PARTS = re.compile(r"^(https?)://([^/?#]*)([^?#]*)(\?[^#]*)?")


def features(fixed, match):
    """name -> value for a fixed-up URL and its pattern match."""
    f = {}
    names = {index: name for name, index in match.re.groupindex.items()}
    for index in range(1, (match.re.groups or 0) + 1):
        value = match.group(index)
        if value:
            f[str(index)] = value
            if index in names:
                f[names[index]] = value
    parts = URL_PARTS.match(fixed)
    scheme, host, path, query = parts.group(1), parts.group(2), parts.group(3), parts.group(4) or ""
    f["@scheme"], f["@host"] = scheme, host
    for name, value in (("@path", path), ("@query", query), ("@rest", path + query), ("@tail", fixed[match.end():])):
        if value:
            f[name] = value
    segments = [s for s in path.split("/") if s]
    for index, segment in enumerate(segments):
        f["@%d" % index] = segment
    if segments:
        f["@last"] = segments[-1]
    for part in query[1:].split("&") if query else []:
        key, _, value = part.partition("=")
        if value and ("?" + key) not in f:
            f["?" + key] = value
    return f


def kind(name):
    if name == "@tail":
        return "tail"
    if name in ("@scheme", "@host", "@path", "@query", "@rest"):
        return "url"
    if name.startswith("@"):
        return "segment"
    if name.startswith("?"):
        return "query"
    if name.isdigit():
        return "number"
    return "named"


COST = {"named": 0, "query": 1, "number": 2, "segment": 3, "url": 4, "tail": 4}


def named_key(f):
    return ",".join(sorted(n for n in f if kind(n) == "named"))


def full_key(f):
    return ",".join(sorted(n for n in f if kind(n) in ("named", "number")))


def escape(text):
    return text.replace("{", "{{").replace("}", "}}")


DELIMITERS = "/?&=#:.;"


def substitute(normal, f, allowed):
    """normal with feature values replaced by {name}, longest value first: a value of 3 or more
    characters wherever it occurs, a shorter one only as a whole token between delimiters."""
    items = sorted(((n, v) for n, v in f.items() if kind(n) in allowed),
                   key=lambda item: (-len(item[1]), COST[kind(item[0])], item[0]))
    pieces = [("text", normal)]
    for name, value in items:
        replaced = []
        for piece_kind, text in pieces:
            if piece_kind != "text" or value not in text:
                replaced.append((piece_kind, text))
                continue
            i, literal = 0, ""
            while i < len(text):
                # What follows the match can only end the URL.
                at_end = i + len(value) == len(text) and text is pieces[-1][1]
                if text.startswith(value, i) and (name != "@tail" or at_end):
                    before = text[i - 1] if i > 0 else None
                    after = text[i + len(value)] if i + len(value) < len(text) else None
                    bounded = before in (None, *DELIMITERS) and after in (None, *DELIMITERS)
                    if len(value) >= 3 or bounded or name == "@tail":
                        if literal:
                            replaced.append(("text", literal))
                            literal = ""
                        replaced.append(("name", name))
                        i += len(value)
                        continue
                literal += text[i]
                i += 1
            if literal:
                replaced.append(("text", literal))
        pieces = replaced
    return "".join(escape(text) if piece_kind == "text" else "{%s}" % text for piece_kind, text in pieces)


# Which kinds of feature one candidate may use: each set gives every answer one candidate.
KIND_SETS = [kinds | {"tail"} for kinds in (
    {"named", "query", "number", "segment", "url"},
    {"named", "query", "number", "segment"},
    {"named", "query", "number"},
    {"named", "query", "segment"},
    {"named", "url"},
    {"named"},
    {"query", "number", "segment", "url"},
    {"segment", "url"},
    {"segment"},
)]


def placeholders(template):
    return re.findall(r"\{([^{}]+)\}", template.replace("{{", "").replace("}}", ""))


def fill(template, f):
    """{name} becomes the feature's value (empty when absent); {{ and }} are literal braces."""
    out, i = "", 0
    while i < len(template):
        if template.startswith("{{", i):
            out, i = out + "{", i + 2
        elif template.startswith("}}", i):
            out, i = out + "}", i + 2
        elif template[i] == "{":
            end = template.index("}", i)
            out, i = out + f.get(template[i + 1:end], ""), end + 1
        else:
            out, i = out + template[i], i + 1
    return out


def best_template(cases):
    """The template that reproduces most of (features, answer), then the cheapest."""
    candidates = {substitute(normal, f, allowed) for f, normal in cases for allowed in KIND_SETS}
    scored = []
    for template in candidates:
        names = placeholders(template)
        if not names:
            continue  # a literal URL says nothing about other stories
        score = sum(1 for f, normal in cases if fill(template, f) == normal)
        if score:
            scored.append((-score, sum(COST[kind(n)] + 1 for n in names), template))
    return (min(scored)[2], -min(scored)[0]) if scored else (None, 0)


def templates_for(cls, pattern):
    """Templates by named key, and overrides by full key ("": FanFicFare asks the site)."""
    regex = re.compile(pattern)
    by_named, by_full, asked_full = collections.defaultdict(list), collections.defaultdict(list), set()
    for _, normal, fixed, asked in answers(cls):
        if fixed is None:
            continue
        match = regex.match(fixed)
        if not match:
            continue
        f = features(fixed, match)
        if normal is None:
            if asked:
                asked_full.add(full_key(f))
            continue
        by_named[named_key(f)].append((f, normal))
        by_full[full_key(f)].append((f, normal))
    templates = {}
    for key, cases in by_named.items():
        template, _ = best_template(cases)
        if template:
            templates[key] = template
    overrides = {}
    for key, cases in by_full.items():
        general = templates.get(named_key(cases[0][0]))
        general_score = sum(1 for f, normal in cases if general and fill(general, f) == normal)
        template, score = best_template(cases)
        if template and score > general_score:
            overrides[key] = template
    for key in asked_full - set(by_full):
        overrides[key] = ""
    return templates, overrides


def rules():
    out = []
    for cls in adapter_classes():
        example = cls.getSiteExampleURLs().split()[0]
        pattern = None
        fragment = None
        with lightweight_adapter(example) as adapter:
            if adapter:
                pattern = adapter.getSiteURLPattern()
                fragment = adapter.getSiteURLFragment()
        if pattern is None:
            continue
        probe = "http://example.org/a?b=1&c=2"
        templates, overrides = templates_for(cls, pattern)
        out.append({
            "site": cls.getConfigSection(),
            "domains": sorted(cls.getAcceptDomains()),
            "fragment": fragment,
            "pattern": icu(pattern),
            "strips_parameters": cls.stripURLParameters(probe) != probe,
            "templates": templates,
            "overrides": overrides,
            "examples": cls.getSiteExampleURLs().split(),
        })
    return {"fanficfare_version": version(), "sites": out}


def icu(pattern):
    """Python regex syntax -> ICU (NSRegularExpression)."""
    pattern = re.sub(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>", r"(?<\1>", pattern)
    pattern = re.sub(r"\(\?P=([A-Za-z_][A-Za-z0-9_]*)\)", r"\\k<\1>", pattern)
    return pattern


def version():
    from importlib.metadata import version as package_version
    return package_version("FanFicFare")


def rules_json():
    return json.dumps(rules(), indent=1, sort_keys=True, ensure_ascii=False)


QUOTES = '"' * 3
SWIFT_FILE = (
    "// Generated by scripts/generate-site-rules.py from FanFicFare %s. Do not edit:\n"
    "// run `python3 scripts/generate-site-rules.py > Sources/FanficCore/Sites/SiteRulesData.swift`.\n"
    "\n"
    "extension SiteRules {\n"
    "    /// Every FanFicFare adapter as data: see SiteRules.swift.\n"
    "    static let generatedJSON = ##" + QUOTES + "\n"
    "%s\n"
    "        " + QUOTES + "##\n"
    "}\n"
)


if __name__ == "__main__":
    if "--check" in sys.argv:
        print(json.dumps({
            "rules": json.loads(rules_json()),
            "samples": [{"site": site, "url": url, "normal": normal, "needs_site": asked}
                        for site, url, normal, asked in samples()],
        }))
    else:
        # Indented as swift format wants it (a multi-line literal's lines align with its close).
        body = "\n".join("        " + line for line in rules_json().split("\n"))
        sys.stdout.write(SWIFT_FILE % (version(), body))
