"""What a grub.cfg does with the environment block: a pure, tiny GRUB-script evaluator.

Text in, values out, no I/O. `evaluate(cfg, files, env)` runs the subset of GRUB
script that real ostree hosts' configs use and answers what `$default` is once
the config has run (what GRUB boots when nobody touches the menu), where the
value came from, and static facts (does it read saved_entry / next_entry, does
it carry greenboot's fallback counting, does it run blscfg).

The configs this was written against:
- Generated (grub2-mkconfig) configs: rhboot/grub2 `util/grub.d/00_header.in`
  (`load_env`; `if [ "${next_entry}" ] ; then set default="${next_entry}" ...
  set boot_once=true else set default="${saved_entry}"` when GRUB_DEFAULT=saved,
  a literal such as `set default="0"` otherwise) and
  `util/grub.d/08_fallback_counting.in` (greenboot's counter).
- bootupd's static config: coreos/bootupd `src/grub2/grub-static-pre.cfg`
  (`load_env`, never `set default`) followed by `src/grub2/configs.d/*.cfg`
  (`01_users.cfg` sources user.cfg, `10_blscfg.cfg` runs `blscfg`,
  `14_menu_show_once.cfg`, `41_custom.cfg` sources custom.cfg) and
  fedora-iot/greenboot `etc/grub.d/greenboot.cfg` (installed as
  configs.d/08_greenboot.cfg: `set default=1` when boot_counter is 0 or -1 and
  boot_success is 0).

Supported: `if/elif/else/fi` with `[ ... ]` / `test` conditions (-n -z = == !=
! -a -o, numeric -eq -ne -lt -le -gt -ge, -f -s -e against the files given),
`set VAR=VALUE`, `VAR=VALUE`, `unset`, `load_env [-f FILE] [VARS]`,
`source`/`.`/`configfile` of a given file, `blscfg`, Fedora's
`increment`/`decrement`, `for VAR in WORDS`, `while`/`until` on decidable
conditions, `function` definitions and calls; `menuentry`/`submenu` bodies are
skipped (they run only when chosen).
Conservative where it cannot know: a condition it cannot decide runs both
branches and any variable they leave different becomes unknown (None); a loop
whose rounds cannot be told, a command that may set variables (`eval`, `read`,
`search --set`, `load_env` of another block, any command not known to be
harmless) make what they may set unknown. An unknown `default` is reported in
`unknown` with its class in `unknown_classes` (UNKNOWN_*) - never a guess.
`menu_lookup`/`menu_index` are GRUB's own lookup of `default` in the menu, and
`blsuki_order` upstream GRUB 2.14's menu order (issue 19).
`prefix` and `config_directory` are the directory holding grub.cfg (the
RAID branch of grub-static-pre.cfg only changes which disk holds the same files).
"""

from __future__ import annotations

from ostreewatch._record import frozen

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

# Where a value of $default came from.
FROM_SAVED = "saved_entry"
FROM_NEXT = "next_entry"
FROM_ENV = "grubenv-default"  # `default=` stored in the grubenv itself, loaded by load_env
FROM_GREENBOOT = "greenboot-fallback"
FROM_LITERAL = "literal"  # `set default=0`, `set default="ostree-2"`
FROM_VARIABLE = "variable"  # `set default="${pinned}"`: another variable's known value
FROM_UNSET = ""
FROM_UNKNOWN = "unknown"

GRUB_DIR = "\x00grubdir"  # the value of $prefix / $config_directory: the directory of grub.cfg
_MAX_DEPTH = 8  # nested `source` levels
_MAX_STEPS = 100_000  # commands executed: a bound on hostile input
# Variable references and assignments are matched by hand: this module is imported before
# READY=1 on grub hosts, and `re` (with the enum it imports) would cost every boot ~7 ms.
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_BRACED_CHARS = _NAME_CHARS | frozenset("?#@*")
_SPECIAL = frozenset("0123456789?#@*")


def _var_at(text: str, i: int) -> tuple[str, int] | None:
    """(name, end) of \\$(?:\\{([A-Za-z0-9_?#@*]+)\\}|([A-Za-z_][A-Za-z0-9_]*|[0-9?#@*])) matched at I."""
    n = len(text)
    if i + 1 >= n or text[i] != "$":
        return None
    c = text[i + 1]
    if c == "{":
        j = i + 2
        while j < n and text[j] in _BRACED_CHARS:
            j += 1
        if j > i + 2 and j < n and text[j] == "}":
            return text[i + 2 : j], j + 1
        return None
    if c in _NAME_START:
        j = i + 2
        while j < n and text[j] in _NAME_CHARS:
            j += 1
        return text[i + 1 : j], j
    if c in _SPECIAL:
        return c, i + 2
    return None


def _vars_in(text: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of each reference, left to right, as re.finditer finds them."""
    out = []
    i = text.find("$")
    while i >= 0:
        hit = _var_at(text, i)
        if hit is None:
            i = text.find("$", i + 1)
        else:
            out.append((i, hit[1], hit[0]))
            i = text.find("$", hit[1])
    return out


def _assignment(word: str) -> tuple[str, str] | None:
    """(name, value) of a fullmatch of ([A-Za-z_][A-Za-z0-9_]*)=(.*)"""
    name, eq, value = word.partition("=")
    if not eq or not name or name[0] not in _NAME_START or not _NAME_CHARS.issuperset(name):
        return None
    return name, value


# GRUB 2 sets these feature_* variables to "y" (grub-core/normal/main.c, `features`).
_FEATURES = (
    "feature_chainloader_bpb",
    "feature_ntldr",
    "feature_platform_search_hint",
    "feature_default_font_path",
    "feature_all_video_module",
    "feature_menuentry_id",
    "feature_menuentry_options",
    "feature_200_final",
    "feature_nativedisk_cmd",
    "feature_timeout_style",
)
_READ_ONLY = ("prefix", "config_directory")


@frozen
class GrubResult:
    """What the config does; `default` None means it cannot be told."""

    default: str | None = ""  # $default after the config ran ("" = unset: entry 0)
    default_from: str = FROM_UNSET  # one of the FROM_* values
    boot_once: bool = False  # the default is next_entry, used for this boot only
    loads_env: bool = False  # load_env runs (given the files present)
    reads_saved_entry: bool = False  # some `default` assignment reads ${saved_entry}
    reads_next_entry: bool = False  # some `default` assignment reads ${next_entry}
    greenboot: bool = False  # a `default` assignment guarded by ${boot_counter}
    greenboot_fired: bool = False  # ... and it ran with this environment
    blscfg: bool = False  # blscfg runs
    menuentries_before_blscfg: int = 0  # plain menuentries ahead of blscfg's (they shift indexes)
    unknown: tuple[str, ...] = ()  # constructs that made the answer unknown
    unknown_classes: tuple[str, ...] = ()  # their classes: one of the UNKNOWN_* values


# Why `default` cannot be told (GrubResult.unknown_classes; docs/default-entry.md lists them).
UNKNOWN_CONDITION = "condition"  # a condition that cannot be decided guards a change of it
UNKNOWN_COMMAND = "command"  # a command that may set variables and is not modelled (eval, read, --set ...)
UNKNOWN_LOOP = "loop"  # a loop whose iterations cannot be told
UNKNOWN_FUNCTION = "function"  # a function call nested too deeply, or `return`
UNKNOWN_LIMIT = "limit"  # too many commands or too deep nesting

# Commands that never change a variable (those that can are modelled or abstain).
_HARMLESS = frozenset(
    [
        "insmod",
        "rmmod",
        "lsmod",
        "echo",
        "terminal_output",
        "terminal_input",
        "terminfo",
        "loadfont",
        "font",
        "save_env",
        "export",
        "password",
        "password_pbkdf2",
        "sleep",
        "clear",
        "background_image",
        "background_color",
        "serial",
        "play",
        "true",
        "false",
        ":",
        "[",
        "test",
        "keystatus",
        "cmostest",
        "linux",
        "linux16",
        "linuxefi",
        "initrd",
        "initrd16",
        "initrdefi",
        "chainloader",
        "ls",
        "cat",
        "videoinfo",
        "fwsetup",
        "gfxmode",
        "set_gfxpayload",
    ]
)
# Commands that set the variable named by --set/-s (search's default is `root`).
_SETTERS = {"search": "root", "search.file": "root", "search.fs_label": "root", "search.fs_uuid": "root"}
_SETTERS_NO_DEFAULT = ("probe", "regexp", "smbios", "hashsum", "getenv")


# --- lexing ------------------------------------------------------------------


def _commands(text: str) -> list[list[str]]:
    """Split GRUB script into commands of raw words (quotes kept; `#` comments dropped)."""
    out: list[list[str]] = []
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(text)

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            words.append("".join(word))
            word.clear()
            in_word = False

    def end_command() -> None:
        end_word()
        if words:
            out.append(list(words))
            words.clear()

    while i < n:
        c = text[i]
        if c in "\"'":
            close = text.find(c, i + 1)
            while c == '"' and close > 0 and text[close - 1] == "\\" and text[close - 2 : close] != "\\\\":
                close = text.find(c, close + 1)
            if close < 0:
                close = n - 1
            word.append(text[i : close + 1])
            in_word = True
            i = close + 1
            continue
        if c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                word.append(text[i : i + 2])
                in_word = True
            i += 2
            continue
        if c == "#" and not in_word:
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if c in " \t\r":
            end_word()
        elif c in ";\n":
            end_command()
        elif c in "{}" and not in_word:
            end_word()
            words.append(c)
        else:
            word.append(c)
            in_word = True
        i += 1
    end_command()
    return out


# --- the tree ----------------------------------------------------------------


class _If:
    __slots__ = ("branches", "orelse")

    def __init__(self, branches: list[tuple[list[list[str]], list[_Node]]], orelse: list[_Node] | None) -> None:
        self.branches = branches  # (condition commands, body)
        self.orelse = orelse


class _Opaque:
    """A loop: `for VAR in WORDS`, `while COND` or `until COND`, and its body."""

    __slots__ = ("kind", "header", "body")

    def __init__(self, kind: str, header: list[str], body: list[_Node]) -> None:
        self.kind = kind
        self.header = header  # the words after the keyword (for) or the condition command (while/until)
        self.body = body


class _Function:
    """`function NAME { BODY }`: defined when the definition runs, its body runs at each call."""

    __slots__ = ("name", "body")

    def __init__(self, name: str, body: list[_Node]) -> None:
        self.name = name
        self.body = body


_Node = object  # a command (List[str]), an _If, an _Opaque or a _Function


class _Parser:
    def __init__(self, cmds: list[list[str]]) -> None:
        self.cmds = cmds
        self.i = 0

    def block(self, stop: tuple[str, ...]) -> tuple[list[_Node], str | None]:
        """Nodes until a command starting with one of `stop`; returns (nodes, the stop word)."""
        nodes: list[_Node] = []
        while self.i < len(self.cmds):
            cmd = self.cmds[self.i]
            if cmd[0] in stop:
                return nodes, cmd[0]
            self.i += 1
            head = cmd[0]
            if head == "if":
                nodes.append(self._if(cmd[1:]))
            elif head in ("for", "while", "until"):
                header = cmd[1:]
                if head != "for":  # the condition may span commands up to `do`: keep the last one
                    while self.i < len(self.cmds) and self.cmds[self.i][0] != "do":
                        header = self.cmds[self.i]
                        self.i += 1
                body, _ = self._after_keyword("do", ("done",))
                self._consume_terminator()
                nodes.append(_Opaque(head, header, body))
            elif head == "function" and len(cmd) >= 2:
                nodes.append(_Function(cmd[1], self._braced_body(cmd)))
            elif head in ("menuentry", "submenu") or (cmd and cmd[-1] == "{"):
                nodes.append(["\x00" + head] + cmd[1:])  # a marker: the body is skipped
                self._skip_braces(cmd)
            else:
                nodes.append(cmd)
        return nodes, None

    def _consume_terminator(self) -> None:
        """Skip the `done` that ended a loop body (GRUB refuses words after it)."""
        if self.i < len(self.cmds):
            self.i += 1

    def _after_keyword(self, keyword: str, stop: tuple[str, ...]) -> tuple[list[_Node], str | None]:
        """Condition commands up to `keyword`, then the body up to `stop` (the condition is dropped)."""
        while self.i < len(self.cmds) and self.cmds[self.i][0] != keyword:
            self.i += 1
        if self.i >= len(self.cmds):
            return [], None
        rest = self.cmds[self.i][1:]
        self.i += 1
        if rest:
            self.cmds.insert(self.i, rest)
        return self.block(stop)

    def _if(self, first_cond: list[str]) -> _If:
        branches: list[tuple[list[list[str]], list[_Node]]] = []
        cond: list[list[str]] = [first_cond] if first_cond else []
        orelse: list[_Node] | None = None
        while True:
            # condition commands until `then`
            while self.i < len(self.cmds) and self.cmds[self.i][0] != "then":
                cond.append(self.cmds[self.i])
                self.i += 1
            if self.i >= len(self.cmds):
                branches.append((cond, []))
                return _If(branches, orelse)
            rest = self.cmds[self.i][1:]
            self.i += 1
            if rest:
                self.cmds.insert(self.i, rest)
            body, word = self.block(("elif", "else", "fi"))
            branches.append((cond, body))
            if word == "elif":
                cond = [self.cmds[self.i][1:]]
                self.i += 1
                continue
            if word == "else":
                rest = self.cmds[self.i][1:]
                self.i += 1
                if rest:
                    self.cmds.insert(self.i, rest)
                orelse, word = self.block(("fi",))
            if word == "fi":
                self.i += 1
            return _If(branches, orelse)

    def _braced_body(self, cmd: list[str]) -> list[_Node]:
        """The commands between CMD's `{` and its matching `}`, parsed (a function's body)."""
        inner: list[list[str]] = []
        if "{" in cmd:
            rest = cmd[cmd.index("{") + 1 :]
        else:  # `function f` with the brace on the next line
            if self.i < len(self.cmds) and self.cmds[self.i][:1] == ["{"]:
                rest = self.cmds[self.i][1:]
                self.i += 1
            else:
                return []
        depth = 1
        c = rest
        while True:
            kept: list[str] = []
            for w in c:
                depth += (w == "{") - (w == "}")
                if depth == 0:
                    break
                kept.append(w)
            if kept:
                inner.append(kept)
            if depth == 0 or self.i >= len(self.cmds):
                break
            c = self.cmds[self.i]
            self.i += 1
        nodes, _ = _Parser(inner).block(())
        return nodes

    def _skip_braces(self, cmd: list[str]) -> None:
        depth = cmd.count("{") - cmd.count("}")
        while depth > 0 and self.i < len(self.cmds):
            c = self.cmds[self.i]
            depth += c.count("{") - c.count("}")
            self.i += 1


# --- evaluation --------------------------------------------------------------


class _State:
    __slots__ = ("vars", "origin", "loads_env", "blscfg", "menuentries", "greenboot_fired", "why")

    def __init__(
        self,
        vars: dict[str, str | None],
        origin: str = FROM_UNSET,
        loads_env: bool | None = False,
        blscfg: bool | None = False,
        menuentries: int = 0,
        greenboot_fired: bool | None = False,
        why: dict[str, str] | None = None,
    ) -> None:
        self.vars = vars
        self.origin = origin
        self.loads_env = loads_env
        self.blscfg = blscfg
        self.menuentries = menuentries
        self.greenboot_fired = greenboot_fired
        self.why: dict[str, str] = {} if why is None else why  # variable -> UNKNOWN_* class, for unknown ones

    def become(self, other: _State) -> None:
        """Take OTHER's values (states are changed in place: a sourced file changes its caller's)."""
        self.vars, self.origin, self.loads_env = other.vars, other.origin, other.loads_env
        self.blscfg, self.menuentries, self.greenboot_fired = other.blscfg, other.menuentries, other.greenboot_fired
        self.why = other.why

    def copy(self) -> _State:
        return _State(
            dict(self.vars),
            self.origin,
            self.loads_env,
            self.blscfg,
            self.menuentries,
            self.greenboot_fired,
            dict(self.why),
        )

    def poison(self, name: str, cls: str) -> None:
        """NAME's value cannot be told, for the reason CLS."""
        if name in _READ_ONLY:
            return
        self.vars[name] = None
        self.why.setdefault(name, cls)
        if name == "default":
            self.origin = FROM_UNKNOWN


def _merge(a: _State, b: _State) -> _State:
    """Both branches may have run: what they agree on stays, the rest becomes unknown."""
    out = a.copy()
    for k in set(a.vars) | set(b.vars):
        va, vb = a.vars.get(k, ""), b.vars.get(k, "")
        out.vars[k] = va if va == vb else None
        if out.vars[k] is None:
            out.why[k] = a.why.get(k) or b.why.get(k) or UNKNOWN_CONDITION
    if a.origin != b.origin or out.vars.get("default", "") is None:
        out.origin = a.origin if a.origin == b.origin else FROM_UNKNOWN
    out.loads_env = a.loads_env if a.loads_env == b.loads_env else None
    out.blscfg = a.blscfg if a.blscfg == b.blscfg else None
    out.greenboot_fired = a.greenboot_fired if a.greenboot_fired == b.greenboot_fired else None
    out.menuentries = max(a.menuentries, b.menuentries)
    return out


class _Facts:
    __slots__ = ("reads_saved", "reads_next", "greenboot", "unknown", "steps")

    def __init__(self) -> None:
        self.reads_saved = False
        self.reads_next = False
        self.greenboot = False
        self.unknown: list[str] = []
        self.steps = 0


def _unquote_expand(raw: str, vars: Mapping[str, str | None]) -> str | None:
    """A raw word with quotes removed and $variables expanded; None when a variable is unknown."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "'":
            j = raw.find("'", i + 1)
            j = n if j < 0 else j
            out.append(raw[i + 1 : j])
            i = j + 1
        elif c == '"':
            j = i + 1
            buf: list[str] = []
            while j < n and raw[j] != '"':
                if raw[j] == "\\" and j + 1 < n and raw[j + 1] in '"\\$':
                    buf.append(raw[j : j + 2])
                    j += 2
                else:
                    buf.append(raw[j])
                    j += 1
            inner = _expand_vars("".join(buf), vars)
            if inner is None:
                return None
            out.append(inner.replace('\\"', '"').replace("\\$", "$").replace("\\\\", "\\"))
            i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(raw[i + 1])
            i += 2
        elif c == "$":
            hit = _var_at(raw, i)
            if hit is None:
                out.append(c)
                i += 1
            else:
                value = vars.get(hit[0], "")
                if value is None:
                    return None
                out.append(value)
                i = hit[1]
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _expand_vars(text: str, vars: Mapping[str, str | None]) -> str | None:
    parts: list[str] = []
    pos = 0
    for start, end, name in _vars_in(text):
        if start > 0 and text[start - 1] == "\\":
            continue
        value = vars.get(name, "")
        if value is None:
            return None
        parts.append(text[pos:start])
        parts.append(value)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _var_names(raw: str) -> list[str]:
    return [name for _, _, name in _vars_in(raw)]


class _Evaluator:
    def __init__(self, files: Mapping[str, str], env: Mapping[str, str]) -> None:
        self.files = files
        self.env = env
        self.facts = _Facts()
        self.functions: dict[str, list[_Node]] = {}
        # Every variable the configs mention (and `default`): what an unknown environment block may set.
        self.names = {n for text in files.values() for n in _var_names(text)} | {"default"}

    # conditions: True, False or None (cannot tell)

    def condition(self, cond: list[list[str]], st: _State) -> bool | None:
        if not cond:
            return None
        last = cond[-1]
        for extra in cond[:-1]:
            self.command(extra, st, live=True, guard=())
        r = self._test(last, st)
        if r is None and last and last[0] not in ("[", "test"):
            self.command(last, st, live=True, guard=())  # its side effects (search --set ...) still happen
        return r

    def _test(self, cmd: list[str], st: _State) -> bool | None:
        words = cmd
        if words and words[0] == "[":
            if words[-1] != "]":
                return None
            words = words[1:-1]
        elif words and words[0] == "test":
            words = words[1:]
        elif words and words[0] in ("true", ":"):
            return True
        elif words and words[0] == "false":
            return False
        else:
            return None  # a command used as a condition (cmostest, keystatus, search, ...)
        values = [_unquote_expand(w, st.vars) if w not in ("-a", "-o", "!", "(", ")") else w for w in words]
        try:
            result, rest = self._or(values)
        except (IndexError, ValueError):
            return None
        return result if not rest else None

    def _or(self, v: list[str | None]) -> tuple[bool | None, list[str | None]]:
        return self._chain(v, "-o", self._and, True)

    def _and(self, v: list[str | None]) -> tuple[bool | None, list[str | None]]:
        return self._chain(v, "-a", self._unary, False)

    @staticmethod
    def _chain(
        v: list[str | None],
        op: str,
        operand: Callable[[list[str | None]], tuple[bool | None, list[str | None]]],
        decides: bool,
    ) -> tuple[bool | None, list[str | None]]:
        """OPERAND (OP OPERAND)*: DECIDES when a side is DECIDES, else unknown (None) when one is, else not DECIDES."""
        left, v = operand(v)
        while v and v[0] == op:
            right, v = operand(v[1:])
            left = (
                decides if (left is decides or right is decides) else (None if None in (left, right) else not decides)
            )
        return left, v

    def _unary(self, v: list[str | None]) -> tuple[bool | None, list[str | None]]:
        if not v:
            raise IndexError("empty test")
        if v[0] == "!":
            r, rest = self._unary(v[1:])
            return (None if r is None else not r), rest
        if len(v) >= 3 and v[1] in ("=", "==", "!=", "-eq", "-ne", "-lt", "-le", "-gt", "-ge"):
            a, op, b = v[0], v[1], v[2]
            if a is None or b is None:
                return None, v[3:]
            if op in ("=", "=="):
                return a == b, v[3:]
            if op == "!=":
                return a != b, v[3:]
            i, j = int(a), int(b)
            return {"-eq": i == j, "-ne": i != j, "-lt": i < j, "-le": i <= j, "-gt": i > j, "-ge": i >= j}[op], v[3:]
        if len(v) >= 2 and v[0] in ("-n", "-z"):
            x = v[1]
            if x is None:
                return None, v[2:]
            return (bool(x) if v[0] == "-n" else not x), v[2:]
        if len(v) >= 2 and v[0] in ("-f", "-s", "-e"):
            return self._file_test(v[1]), v[2:]
        if len(v) >= 2 and v[0] == "-d":
            return None, v[2:]
        x = v[0]
        return (None if x is None else bool(x)), v[1:]

    def _file_test(self, path: str | None) -> bool | None:
        if path is None or not path.startswith(GRUB_DIR + "/"):
            return None
        name = path[len(GRUB_DIR) + 1 :]
        return name in self.files

    # commands

    def run(self, nodes: list[_Node], st: _State, live: bool, guard: tuple[str, ...], depth: int) -> _State:
        for node in nodes:
            self.facts.steps += 1
            if self.facts.steps > _MAX_STEPS:
                self.facts.unknown.append("too many commands")
                st.poison("default", UNKNOWN_LIMIT)
                return st
            if isinstance(node, _If):
                st.become(self._run_if(node, st, live, guard, depth))
            elif isinstance(node, _Opaque):
                self._loop(node, st, live, guard, depth)
            elif isinstance(node, _Function):
                self.run(node.body, st.copy(), False, guard, depth)  # static facts (reads saved_entry ...)
                if live:
                    self.functions[node.name] = node.body
            else:
                assert isinstance(node, list)
                self.command(node, st, live, guard, depth)
        return st

    def _loop(self, node: _Opaque, st: _State, live: bool, guard: tuple[str, ...], depth: int) -> None:
        """Follow a loop: `for` over its expanded words, `while`/`until` while the condition is decided."""
        g = guard + tuple(name for w in node.header for name in _var_names(w))
        if not live:
            self.run(node.body, st.copy(), False, g, depth)
            return
        if node.kind == "for":
            words = node.header[2:] if len(node.header) >= 2 and node.header[1] == "in" else None
            values = [_unquote_expand(w, st.vars) for w in words] if words is not None else [None]
            split = any("$" in w and not w.startswith(("'", '"')) for w in words or [])
            if words is None or None in values or split or not node.header or self._escapes(node.body):
                self._give_up_loop(node, st, g, depth, "cannot follow the `for` loop")
                return
            for v in values:
                assert v is not None
                st.vars[node.header[0]] = v
                self.run(node.body, st, True, g, depth)
            return
        for _ in range(64):  # GRUB would run on; a bound keeps hostile input finite
            r = self.condition([node.header], st) if node.header else None
            if r is not None and node.kind == "until":
                r = not r
            if r is False:
                return
            if r is None or self._escapes(node.body):
                self._give_up_loop(node, st, g, depth, f"cannot tell how often the `{node.kind}` loop runs")
                return
            self.run(node.body, st, True, g, depth)
        self._give_up_loop(node, st, g, depth, f"the `{node.kind}` loop runs on")

    @staticmethod
    def _escapes(body: list[_Node]) -> bool:
        """Does BODY use break/continue/return (not followed)?"""
        return any(isinstance(n, list) and n and n[0] in ("break", "continue", "return") for n in body)

    def _give_up_loop(self, node: _Opaque, st: _State, guard: tuple[str, ...], depth: int, why: str) -> None:
        """The loop runs an unknown number of times: what two runs of its body change becomes unknown."""
        after = st.copy()
        if node.kind == "for" and node.header:
            after.poison(node.header[0], UNKNOWN_LOOP)
        for _ in range(2):
            after = self.run(node.body, after, True, guard, depth)
        for k in set(st.vars) | set(after.vars):
            if after.vars.get(k, "") != st.vars.get(k, "") or after.vars.get(k, "") is None:
                st.poison(k, after.why.get(k, UNKNOWN_LOOP))
        if st.vars.get("default", "") is None:
            self.facts.unknown.append(why)

    def _call(self, name: str, args: list[str], st: _State, guard: tuple[str, ...], depth: int) -> None:
        """Run function NAME with positional parameters ARGS (GRUB: $1..., $#, $@, $*)."""
        values = [_unquote_expand(a, st.vars) for a in args]
        if depth >= _MAX_DEPTH or None in values or self._escapes(self.functions[name]):
            st.poison("default", UNKNOWN_FUNCTION)
            self.facts.unknown.append(f"cannot follow the call of function {name}")
            return
        names = [str(i) for i in range(1, 10)] + ["#", "@", "*"]
        saved = {k: st.vars.get(k) for k in names if k in st.vars}
        for k in names:
            st.vars.pop(k, None)
        for i, v in enumerate(values[:9], 1):
            st.vars[str(i)] = v
        st.vars["#"] = str(len(values))
        st.vars["@"] = st.vars["*"] = " ".join(v or "" for v in values)
        self.run(self.functions[name], st, True, guard, depth + 1)
        for k in names:
            st.vars.pop(k, None)
        st.vars.update(saved)

    def _run_if(self, node: _If, st: _State, live: bool, guard: tuple[str, ...], depth: int) -> _State:
        if not live:
            for cond, body in node.branches:
                self.run(body, st.copy(), False, guard + tuple(self._cond_vars(cond)), depth)
            if node.orelse is not None:
                self.run(node.orelse, st.copy(), False, guard, depth)
            return st
        outcomes: list[_State] = []
        decided = False
        for cond, body in node.branches:
            g = guard + tuple(self._cond_vars(cond))
            if decided:
                self.run(body, st.copy(), False, g, depth)
                continue
            r = self.condition(cond, st)
            if r is False:
                self.run(body, st.copy(), False, g, depth)
                continue
            outcomes.append(self.run(body, st.copy(), True, g, depth))
            decided = r is True
        if decided:
            if node.orelse is not None:
                self.run(node.orelse, st.copy(), False, guard, depth)
        elif node.orelse is not None:
            outcomes.append(self.run(node.orelse, st.copy(), True, guard, depth))
        else:
            outcomes.append(st.copy())
        result = outcomes[0]
        for other in outcomes[1:]:
            result = _merge(result, other)
        if len(outcomes) > 1 and result.vars.get("default", "") is None and st.vars.get("default", "") is not None:
            conds = " ".join(" ".join(c) for cond, _ in node.branches for c in cond)
            self.facts.unknown.append(f"`default` depends on a condition that cannot be evaluated: {conds}")
        return result

    @staticmethod
    def _cond_vars(cond: list[list[str]]) -> list[str]:
        return [name for cmd in cond for w in cmd for name in _var_names(w)]

    def command(self, cmd: list[str], st: _State, live: bool, guard: tuple[str, ...], depth: int = 0) -> None:
        head = cmd[0]
        if head.startswith("\x00"):
            if live and head in ("\x00menuentry", "\x00submenu") and not st.blscfg:
                st.menuentries += 1
            return
        if head == "set" and len(cmd) >= 2:
            for w in cmd[1:]:
                a = _assignment(w)
                if a:
                    self.assign(a[0], a[1], st, live, guard)
            return
        a = _assignment(head)
        if a and len(cmd) == 1:
            self.assign(a[0], a[1], st, live, guard)
            return
        if not live:
            return
        if head in self.functions:
            self._call(head, cmd[1:], st, guard, depth)
        elif head == "unset":
            for name in cmd[1:]:
                if name not in _READ_ONLY:
                    st.vars[name] = ""
                    if name == "default":
                        st.origin = FROM_UNSET
        elif head == "load_env":
            self._load_env(cmd[1:], st)
        elif head in ("blscfg", "bls_import"):
            st.blscfg = True if st.blscfg is not None else None
        elif head in ("source", ".", "configfile") and len(cmd) >= 2:
            path = _unquote_expand(cmd[1], st.vars)
            if path is None or not path.startswith(GRUB_DIR + "/"):
                return  # a file elsewhere: not one of ours
            name = path[len(GRUB_DIR) + 1 :]
            if name in self.files and name != "grub.cfg" and depth < _MAX_DEPTH:
                nodes, _ = _Parser(_commands(self.files[name])).block(())
                self.run(nodes, st, True, guard, depth + 1)
        elif head in ("source", ".", "configfile"):
            pass  # no file given: GRUB refuses the command
        elif head in _SETTERS or head in _SETTERS_NO_DEFAULT:
            for name in self._set_targets(cmd):
                st.poison(name, UNKNOWN_COMMAND)
                if name == "default":
                    self.facts.unknown.append(f"`{head}` sets default")
        elif head == "read":
            for name in cmd[1:2]:
                st.poison(name, UNKNOWN_COMMAND)
                if name == "default":
                    self.facts.unknown.append("`read` sets default")
        elif head in ("increment", "decrement") and len(cmd) >= 2:
            name = cmd[1]
            value = st.vars.get(name, "")
            try:
                st.vars[name] = str(int(value) + (1 if head == "increment" else -1)) if value is not None else None
            except ValueError:
                st.poison(name, UNKNOWN_COMMAND)
        elif head not in _HARMLESS:
            st.poison("default", UNKNOWN_COMMAND)
            self.facts.unknown.append(f"the command `{head}` may change default")

    @staticmethod
    def _set_targets(cmd: list[str]) -> list[str]:
        """The variables a --set/-s command sets (search sets `root` when none is named)."""
        out: list[str] = []
        words = cmd[1:]
        for i, w in enumerate(words):
            if w.startswith("--set="):
                out.append(w[len("--set=") :])
            elif w in ("--set", "-s"):
                # GRUB's optional argument: whether the next word is it, or search's `root` is meant,
                # both are treated as set (conservative).
                nxt = words[i + 1] if i + 1 < len(words) else ""
                if nxt and not nxt.startswith("-"):
                    out.append(nxt)
                if cmd[0] in _SETTERS:
                    out.append(_SETTERS[cmd[0]])
        if cmd[0] == "search.fs_uuid" and len(words) >= 2 and not words[1].startswith("-"):
            out.append(words[1])
        return [n.split(":", 1)[-1].strip("\"'") for n in out]

    def _load_env(self, args: list[str], st: _State) -> None:
        file_name: str | None = "grubenv"
        whitelist: list[str] = []
        it = iter(args)
        for a in it:
            if a in ("-f", "--file"):
                path = _unquote_expand(next(it, ""), st.vars)
                file_name = path[len(GRUB_DIR) + 1 :] if path and path.startswith(GRUB_DIR + "/") else None
            elif a.startswith("-"):
                continue  # --skip-sig
            else:
                whitelist.append(a)
        if file_name == "grubenv" and "grubenv" not in self.files:
            return  # GRUB: file not found, nothing loaded
        if file_name != "grubenv":
            if file_name is not None and file_name not in self.files:
                return  # a file of grub.cfg's directory that is not there: nothing loaded
            # Another environment block (env_block, a file elsewhere): its variables are not known here.
            st.loads_env = None
            for name in whitelist or sorted(self.names):
                st.poison(name, UNKNOWN_COMMAND)
            if "default" in (whitelist or self.names):
                self.facts.unknown.append("load_env reads an environment block other than the grubenv")
            return
        st.loads_env = True if st.loads_env is not None else None
        for name, value in self.env.items():
            if (whitelist and name not in whitelist) or name in _READ_ONLY:
                continue
            st.vars[name] = value
            if name == "default":
                st.origin = FROM_ENV

    def assign(self, name: str, raw: str, st: _State, live: bool, guard: tuple[str, ...]) -> None:
        if name in _READ_ONLY:
            return
        if name == "default":
            names = _var_names(raw)
            if "saved_entry" in names:
                self.facts.reads_saved = True
            if "next_entry" in names:
                self.facts.reads_next = True
            counted = "boot_counter" in guard
            if counted:
                self.facts.greenboot = True
        if not live:
            return
        value = _unquote_expand(raw, st.vars)
        st.vars[name] = value
        st.why.pop(name, None)
        if value is None:
            cause = next((st.why[n] for n in _var_names(raw) if st.vars.get(n, "") is None and n in st.why), None)
            st.poison(name, cause or UNKNOWN_COMMAND)
        if name != "default":
            return
        names = _var_names(raw)
        if value is None:
            self.facts.unknown.append(f"default is set from {raw}, which cannot be told")
        elif "boot_counter" in guard:
            st.origin = FROM_GREENBOOT
            st.greenboot_fired = True if st.greenboot_fired is not None else None
        elif names == ["next_entry"]:
            st.origin = FROM_NEXT
        elif names == ["saved_entry"]:
            st.origin = FROM_SAVED
        elif not names:
            st.origin = FROM_LITERAL
        else:
            st.origin = FROM_VARIABLE


def evaluate(cfg: str, files: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None) -> GrubResult:
    """Run grub.cfg (CFG) as GRUB would with the grubenv ENV loaded on demand.

    FILES maps names relative to grub.cfg's directory to their text ("user.cfg",
    "custom.cfg", "console.cfg", ...); a name present with any text makes `-f`
    true; include "grubenv" when the grubenv exists (its text is not read: ENV is
    its variables).
    """
    files = dict(files or {})
    env = dict(env or {})
    ev = _Evaluator(dict(files, **{"\x00grub.cfg": cfg}), env)
    vars: dict[str, str | None] = {name: "y" for name in _FEATURES}
    vars.update(prefix=GRUB_DIR, config_directory=GRUB_DIR)
    st = _State(vars)
    try:
        nodes, _ = _Parser(_commands(cfg)).block(())
        st = ev.run(nodes, st, True, (), 0)
    except RecursionError:
        ev.facts.unknown.append("the configuration nests too deeply")
        st.poison("default", UNKNOWN_LIMIT)
    default = st.vars.get("default", "")
    origin = st.origin if default is not None else FROM_UNKNOWN
    if default == "" and origin != FROM_UNKNOWN:
        origin = FROM_UNSET
    return GrubResult(
        default=default,
        default_from=origin,
        boot_once=origin == FROM_NEXT,
        loads_env=st.loads_env is not False,
        reads_saved_entry=ev.facts.reads_saved,
        reads_next_entry=ev.facts.reads_next,
        greenboot=ev.facts.greenboot,
        greenboot_fired=bool(st.greenboot_fired),
        blscfg=st.blscfg is not False,
        menuentries_before_blscfg=st.menuentries,
        unknown=tuple(dict.fromkeys(ev.facts.unknown)) if default is None else (),
        unknown_classes=(st.why.get("default", UNKNOWN_CONDITION),) if default is None else (),
    )


# --- the menu: which entry `default` picks (grub-core/normal/menu.c, kern/misc.c) --------------------


def grub_strtoul(value: str) -> tuple[int, str]:
    """GRUB's grub_strtoul(VALUE, NULL, 0) on a 64-bit build: (number, error), error "" / "bad" / "range".

    kern/misc.c grub_strtoull: leading white space skipped, `0x` means base 16 and a
    leading `0` followed by 0-7 base 8, digits read until the first one that does not
    belong (trailing text ignored); no sign. "bad": no digit at all (GRUB_ERR_BAD_NUMBER);
    "range": more than 64 bits (GRUB_ERR_OUT_OF_RANGE).
    """
    s = value.lstrip(" \t\n\r\f\v")
    base = 10
    if s.startswith("0x"):
        base, s = 16, s[2:]
    elif len(s) >= 2 and s[0] == "0" and "0" <= s[1] <= "7":
        base = 8
    num, found = 0, False
    for c in s:
        d = "0123456789abcdefghijklmnopqrstuvwxyz".find(c.lower()) if c.isascii() else -1
        if d < 0 or d >= base:
            break
        found = True
        num = num * base + d
        if num > 0xFFFFFFFFFFFFFFFF:
            return 0, "range"
    return (num, "") if found else (0, "bad")


def _menuentry_eq(name: str, spec: str) -> bool:
    """menu.c menuentry_eq: SPEC names NAME; `>>` is a literal `>`, a single `>` ends it (a submenu path)."""
    i = j = 0
    while True:
        if spec[j : j + 1] == ">" and spec[j + 1 : j + 2] != ">":
            return i == len(name)
        if spec[j : j + 1] == ">":
            j += 1
        a, b = name[i : i + 1], spec[j : j + 1]
        if a != b:
            return False
        if a == "":
            return True
        i += 1
        j += 1


def menu_lookup(value: str | None, menu: list[tuple[str, str]]) -> int | None:
    """The index `default=VALUE` names in MENU, a list of (id, title); None when it names none.

    menu.c get_entry_number: a value that grub_strtoul reads is an index (`1abc` is 1,
    `0x10` 16, `010` 8; the C cast to int keeps the low 32 bits, signed); otherwise
    the first entry whose title or id matches (menuentry_eq). run_menu boots entry 0
    when this is None or out of range (menu_index).
    """
    if value is None:
        return None
    n, err = grub_strtoul(value)
    if err == "bad":
        return next(
            (i for i, (id_, title) in enumerate(menu) if _menuentry_eq(title, value) or _menuentry_eq(id_, value)), None
        )
    if err:
        return None
    entry = n & 0xFFFFFFFF
    entry = entry - (1 << 32) if entry >= 1 << 31 else entry
    return entry if 0 <= entry < len(menu) else None


def menu_index(value: str | None, menu: list[tuple[str, str]]) -> int:
    """The index GRUB boots for `default=VALUE` in MENU: menu_lookup, else entry 0."""
    i = menu_lookup(value, menu)
    return 0 if i is None else i


# --- menu order: upstream GRUB 2.14 blsuki vs Fedora's blscfg ---------------------------------------


def _file_prefixlen(s: str) -> int:
    """gnulib filevercmp.c file_prefixlen: S less its longest suffix matching (\\.[A-Za-z~][A-Za-z0-9~]*)*$."""
    prefixlen = i = 0
    n = len(s)
    while i < n:
        i += 1
        prefixlen = i
        while i + 1 < n and s[i] == "." and (s[i + 1].isascii() and (s[i + 1].isalpha() or s[i + 1] == "~")):
            i += 2
            while i < n and s[i].isascii() and (s[i].isalnum() or s[i] == "~"):
                i += 1
    return prefixlen


def _order(s: bytes, pos: int) -> int:
    if pos == len(s):
        return 0
    c = s[pos]
    if 48 <= c <= 57:
        return 0
    if 65 <= c <= 90 or 97 <= c <= 122:
        return c
    if c == 126:  # '~'
        return -1
    return 256 + c


def _verrevcmp(a: bytes, b: bytes) -> int:
    """gnulib filevercmp.c verrevcmp."""
    i = j = 0
    digit = range(48, 58)
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and a[i] not in digit) or (j < len(b) and b[j] not in digit):
            ca, cb = _order(a, i), _order(b, j)
            if ca != cb:
                return ca - cb
            i += 1
            j += 1
        while i < len(a) and a[i] == 48:
            i += 1
        while j < len(b) and b[j] == 48:
            j += 1
        while i < len(a) and j < len(b) and a[i] in digit and b[j] in digit:
            if not first_diff:
                first_diff = a[i] - b[j]
            i += 1
            j += 1
        if i < len(a) and a[i] in digit:
            return 1
        if j < len(b) and b[j] in digit:
            return -1
        if first_diff:
            return first_diff
    return 0


def filevercmp(a: str, b: str) -> int:
    """gnulib filevercmp (GRUB 2.14 grub-core/lib/gnulib/filevercmp.c): version-aware file name order."""
    if not a or not b:
        return (bool(a)) - (bool(b))
    if a[0] == "." or b[0] == ".":
        if b[0] != ".":
            return -1
        if a[0] != ".":
            return 1
        for special in (".", ".."):
            if a == special or b == special:
                return 0 if a == b else (-1 if a == special else 1)
    ab, bb = a.encode(), b.encode()
    pa, pb = len(_file_prefixlen_bytes(ab)), len(_file_prefixlen_bytes(bb))
    r = _verrevcmp(ab[:pa], bb[:pb])
    if r or (pa == len(ab) and pb == len(bb)):
        return r
    return _verrevcmp(ab, bb)


def _file_prefixlen_bytes(s: bytes) -> bytes:
    return s[: _file_prefixlen(s.decode("latin-1"))]


FLAVOUR_UPSTREAM = "upstream"  # GRUB 2.14 blsuki.mod (Debian, Ubuntu, Arch ...; boot/grub/)
FLAVOUR_FEDORA = "fedora"  # rhboot/grub2 blscfg.mod (Fedora, RHEL, CentOS; boot/grub2/)


def blsuki_order(files: list[str]) -> list[str]:
    """Entry file names in GRUB 2.14 blsuki's menu order.

    grub-core/commands/blsuki.c blsuki_add_entry inserts each entry before the first
    one it compares greater than with filevercmp on the whole file name: highest first;
    `version` and `sort-key` are not looked at. Equal names cannot occur in one directory.
    """
    out: list[str] = []
    for f in files:
        pos = next((k for k, e in enumerate(out) if filevercmp(f, e) > 0), len(out))
        out.insert(pos, f)
    return out
