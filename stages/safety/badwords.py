"""C4's bad-words rule (Raffel et al. 2020, section 2.2; the C4 code and datatrove's C4BadWordsFilter): a
document that contains a listed word or phrase is rejected as `badwords`, with `<lang>:<word>` as detail.

    BadWords(BadwordsConfig(badwords={"en": "lists/en.txt", "*": "lists/any.txt"})).verdict(doc)

The list is chosen by the document's `lang` column (`pt-BR` falls back to `pt`, then to the `"*"` list);
a document without a list for its language is kept. Lists are user files, one word or phrase a line (the
LDNOOBW layout C4 used), `#` comments. Matching is on the lower-cased text: where words are separated by
spaces a listed word must stand alone (not inside another word: `class` does not match `ass`), as C4's
`(?:\\W|^)(...)(?:\\W|$)`; for languages written without spaces (`badwords_substring_langs`: Japanese,
Thai, Chinese, as C4 and datatrove) any occurrence counts. The words are compiled into one trie-shaped
regex, so a document is scanned once whatever the list's length.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from common.recipe import require
from stages.base import Doc, Drop, Filter, Verdict
from stages.safety.lists import trie_pattern, words


@dataclass(frozen=True)
class BadwordsConfig:
    """C4's bad-words rule (`[safety]` keys; no lists: off)."""

    badwords: dict[str, str] = field(default_factory=dict)  # lang -> word file; "*": languages without one
    badwords_substring_langs: tuple[str, ...] = ("ja", "th", "zh")  # written without spaces: match substrings

    def __post_init__(self):
        for lang, path in self.badwords.items():
            require(bool(lang) and bool(path), "badwords", {lang: path}, "language = file, both non-empty")


@functools.cache
def badwords_pattern(path: str, substrings: bool) -> re.Pattern | None:
    """The compiled list; None for an empty one."""
    listed = words(path)
    if not listed:
        return None
    body = trie_pattern(sorted(listed))
    return re.compile(body if substrings else rf"(?<!\w)(?:{body})(?!\w)")


def base_lang(lang: str) -> str:
    """`pt-br` -> `pt`, `zh_hans` -> `zh`."""
    return re.split(r"[-_]", lang, maxsplit=1)[0]


class BadWords(Filter):
    """Rejects documents containing a word of their language's list (C4)."""

    name = "badwords"

    def __init__(self, config: BadwordsConfig = BadwordsConfig()):
        self.config = config
        self.lists = {lang.lower(): path for lang, path in config.badwords.items()}

    def model_files(self) -> tuple[str, ...]:
        return tuple(self.config.badwords.values())

    def list_for(self, lang: str) -> str | None:
        """The word file for `lang`: its own, its base language's (`pt-BR` -> `pt`), else `"*"`'s."""
        return self.lists.get(lang) or self.lists.get(base_lang(lang)) or self.lists.get("*")

    def verdict(self, doc: Doc) -> Verdict:
        if not self.lists:
            return None
        lang = (doc.get("lang") or "").lower()
        path = self.list_for(lang)
        substrings = base_lang(lang) in self.config.badwords_substring_langs
        pattern = badwords_pattern(path, substrings) if path else None
        found = pattern.search((doc.get("text") or "").lower()) if pattern else None
        return Drop("badwords", f"{lang or '?'}:{found.group()}") if found else None
