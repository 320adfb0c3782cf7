"""The kernel command line (/proc/cmdline).

Splitting follows systemd's proc_cmdline_extract_first(): extract_first_word()
with EXTRACT_UNQUOTE|EXTRACT_RELAX|EXTRACT_RETAIN_ESCAPE (src/basic/extract-word.c):
whitespace separates words, single and double quotes group and are removed
anywhere in a word, backslashes are kept as they are, an unclosed quote runs to
the end. `ostree=` is read the way ostree-prepare-root reads it
(otcore_find_proc_cmdline_key / read_proc_cmdline_key in ostree's src): the
FIRST word starting with "ostree=", words split on spaces only, no unquoting.
"""

from __future__ import annotations

from ostreewatch.errors import CmdlineError
from ostreewatch.parse import checked_text

_WHITESPACE = " \t\n\r"


def _check(text: str) -> str:
    return checked_text(text, "command line", CmdlineError)


def split_cmdline(text: str) -> list[str]:
    """The words of a command line, quotes removed, as systemd sees them."""
    try:
        _check(text)
        words: list[str] = []
        word: list[str] = []
        in_word = False
        quote = ""
        for c in text:
            if quote:
                if c == quote:
                    quote = ""
                else:
                    word.append(c)
            elif c in "'\"":
                quote = c
                in_word = True
            elif c in _WHITESPACE:
                if in_word:
                    words.append("".join(word))
                    word = []
                    in_word = False
            else:
                word.append(c)
                in_word = True
        if in_word:
            words.append("".join(word))  # EXTRACT_RELAX: an unclosed quote ends the word
        return words
    except CmdlineError:
        raise
    except Exception as e:  # nothing but our own error leaves a parser
        raise CmdlineError(f"cannot split command line: {e}") from e


def _ostree_style(text: str, key: str) -> str | None:
    """ostree-prepare-root: first space-separated word "KEY=..." (no unquoting)."""
    prefix = key + "="
    for word in text.split(" "):
        if word.startswith(prefix):
            return word[len(prefix) :].rstrip("\n")
    return None


def get_arg(text: str, key: str, *, ostree_style: bool | None = None) -> str | None:
    """The value of `key`: None when absent, "" for a bare `key`.

    systemd's rule (the last occurrence wins) for every key except `ostree`, which
    is read as ostree-prepare-root reads it (the first occurrence); `ostree_style`
    forces either rule.
    """
    try:
        _check(text)
        if not isinstance(key, str) or not key or "=" in key:
            raise CmdlineError(f"invalid command line key {key!r}")
        if ostree_style is None:
            ostree_style = key == "ostree"
        if ostree_style:
            return _ostree_style(text, key)
        value: str | None = None
        for word in split_cmdline(text):
            if word == key:
                value = ""
            elif word.startswith(key + "="):
                value = word[len(key) + 1 :]
        return value
    except CmdlineError:
        raise
    except Exception as e:
        raise CmdlineError(f"cannot read {key!r} from command line: {e}") from e
