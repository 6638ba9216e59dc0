#!/usr/bin/env python3
"""Generate Sources/FanficCore/Sites/site-rules.json from the installed FanFicFare.

FanFicFare is the authority on which URLs are stories and what a story's canonical URL is, but
it decides in Python code, adapter by adapter. This script turns each adapter into data the
Swift side can apply:

- site: the adapter's config section (the lock key), domains it accepts, the URL fragment that
  picks between adapters sharing a domain;
- pattern: its story URL regex (Python syntax converted to ICU);
- templates: how the canonical URL is built from the pattern's groups, inferred by running
  FanFicFare's own getNormalStoryURL on the adapter's example URLs and spelling variants of them,
  one template per set of groups that matched (optional groups such as a title change the URL).

`--check` prints, for every example and variant, FanFicFare's canonical URL as JSON lines: the
Swift test compares its own answer with these (see SiteRulesAgreementTests).
"""
import functools
import json
import logging
import re
import sys

logging.disable(logging.CRITICAL)

import fanficfare  # noqa: E402
import fanficfare.adapters as adapters  # noqa: E402
from fanficfare.adapters import _get_class_for, getNormalStoryURL, lightweight_adapter  # noqa: E402


def adapter_classes():
    return list(getattr(adapters, "__class_list"))


def variants(url):
    """The example, plus the spellings users paste: http/https, with and without www. or m."""
    out = {url}
    for a, b in (("https://", "http://"), ("http://", "https://")):
        if url.startswith(a):
            out.add(b + url[len(a):])
    for u in list(out):
        m = re.match(r"^(https?://)(www\.|m\.)?(.*)$", u)
        if m:
            rest = m.group(3)
            out |= {m.group(1) + rest, m.group(1) + "www." + rest, m.group(1) + "m." + rest}
    return sorted(out)


@functools.lru_cache(maxsize=None)
def answers(cls):
    """(input, FanFicFare's canonical URL or None, the URL after FanFicFare's fix-ups) for every
    example URL of the adapter and its variants. Asked once: getNormalStoryURL is slow."""
    return [
        (url, getNormalStoryURL(url), _get_class_for(url)[1])
        for example in cls.getSiteExampleURLs().split()
        for url in variants(example)
    ]


def samples():
    """(site, input, FanFicFare's canonical URL or None) for every example and variant."""
    for cls in adapter_classes():
        for url, normal, _ in answers(cls):
            yield cls.getConfigSection(), url, normal


def icu(pattern):
    """Python regex syntax -> ICU (NSRegularExpression)."""
    pattern = re.sub(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>", r"(?<\1>", pattern)
    pattern = re.sub(r"\(\?P=([A-Za-z_][A-Za-z0-9_]*)\)", r"\\k<\1>", pattern)
    return pattern


def group_values(match):
    """Every group that matched, by name if it has one, else by number: longest first."""
    names = {index: name for name, index in match.re.groupindex.items()}
    values = []
    for index in range(1, (match.re.groups or 0) + 1):
        value = match.group(index)
        if value:
            values.append((names.get(index, str(index)), value))
    return sorted(values, key=lambda item: -len(item[1]))


def infer(cls, pattern):
    """Templates keyed by the sorted names of the groups that matched."""
    templates = {}
    for _, normal, fixed in answers(cls):
        if normal is None:
            continue
        match = re.match(pattern, fixed)
        if not match:
            continue
        # Named groups only: numbered ones are mostly structure (a host prefix, a chapter).
        named = [(name, value) for name, value in group_values(match) if not name.isdigit()]
        template = normal.replace("{", "{{").replace("}", "}}")
        for name, value in named:
            if len(value) > 1 and value in template:
                template = template.replace(value, "{%s}" % name)
        if "{" not in template.replace("{{", ""):
            continue  # a literal URL says nothing about other stories: use the fallback
        key = ",".join(sorted(name for name, _ in named))
        if templates.get(key, template) != template:
            templates[key] = None  # inconsistent: this shape is left to the fallback
        else:
            templates.setdefault(key, template)
    return {key: value for key, value in templates.items() if value is not None}


def canonical_origin(cls):
    """When FanFicFare only rewrites the scheme and host (http -> https, adds www.), that origin.

    Used for the URLs no template covers: the canonical URL is then this origin plus the
    fixed-up URL's path and query, which is what such adapters do."""
    origin = None
    for _, normal, fixed in answers(cls):
        if normal is None:
            continue
        fixed_rest = re.sub(r"^https?://[^/?#]*", "", fixed)
        m = re.match(r"^(https?://[^/?#]*)(.*)$", normal)
        if not m or m.group(2) != fixed_rest:
            return None
        if origin not in (None, m.group(1)):
            return None
        origin = m.group(1)
    return origin


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
        out.append({
            "site": cls.getConfigSection(),
            "domains": sorted(cls.getAcceptDomains()),
            "fragment": fragment,
            "pattern": icu(pattern),
            "templates": infer(cls, pattern),
            "origin": canonical_origin(cls),
            "examples": cls.getSiteExampleURLs().split(),
        })
    return {"fanficfare_version": fanficfare.__version__ if hasattr(fanficfare, "__version__") else version(),
            "sites": out}


def version():
    from importlib.metadata import version as package_version
    return package_version("FanFicFare")


def rules_json():
    data = rules()
    data["fanficfare_version"] = version()
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)


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
        # One JSON object: the rules as this FanFicFare would generate them, and its answers.
        print(json.dumps({
            "rules": json.loads(rules_json()),
            "samples": [{"site": site, "url": url, "normal": normal} for site, url, normal in samples()],
        }))
    else:
        # Indented as swift format wants it (a multi-line literal's lines align with its close).
        body = "\n".join("        " + line for line in rules_json().split("\n"))
        sys.stdout.write(SWIFT_FILE % (version(), body))
