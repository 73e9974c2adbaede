"""Hypothesis strategies for what a careless or hostile caller hands a hypervisor.

``values(files)`` draws from every class issue 12 names: wrong types, empty, None, huge
and negative numbers, non-ASCII text, control characters and NUL, XML and shell
metacharacters, relative and traversal paths, and node files with binary content.
``Files`` holds the node files those paths point at (made once per module).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collections.abc import Callable

from hypothesis import HealthCheck, example, settings, strategies as st

# Deterministic: the same examples every run, so CI finds an escape every time or never.
SETTINGS = settings(derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

WRONG_TYPES: list[Any] = [0, 1, -1, 2**31, 2**63, 2**200, -2**63, 1.5, -0.0, math.nan,
                          math.inf, True, False, [], ["a"], [1, 2], {}, {"a": 1}, (), ("x",),
                          b"", b"\x00bytes", bytearray(b"x"), {1}]
EMPTY: list[Any] = [None, "", " ", "\t", "\n"]
NON_ASCII = ["\u00fcber", "\u65e5\u672c", "\u0434\u0438\u0441\u043a", "\U0001f4be",
             "e\u0301", "\u202eevil", "\ufeff"]
CONTROL = ["\x00", "a\x00b", "\x01", "\x07", "\x1b[31m", "\x7f", "a\rb", "\x0b", "\ud800",
           "\udcff", "\ufffe", "\uffff"]
XML_META = ["<a>", "</domain>", "<!--", "]]>", "&", "&amp;", "&#0;", "'", '"', "'\"><x y='",
            "<![CDATA[x]]>", "<?xml?>"]
SHELL_META = ["; rm -rf /", "$(id)", "`id`", "|true", "a && b", "*", "~root", "-rf", "--help",
              "${IFS}", "a b", "%s%n", "\\"]
PATHS = ["../../etc/passwd", "relative/path", "./x", "/abs/../traversal", "/a//b", "/a/./b",
         "/", "/dev/null", "/dev/zero", "/proc/self/mem", "/nonexistent/file", "/tmp",
         "/" + "a" * 5000]
HUGE_TEXT = ["a" * 100_000, "9" * 400, "-" + "9" * 400]


@dataclass(frozen=True)
class Files:
    """Node files hostile paths point at."""

    binary: str       # every byte value, NUL included
    nul_line: str     # one line holding a NUL (a password file, say)
    empty: str
    directory: str

    @classmethod
    def make(cls, where: Path) -> "Files":
        where.mkdir(parents=True, exist_ok=True)
        (where / "binary").write_bytes(bytes(range(256)) * 4)
        (where / "nul-line").write_bytes(b"pass\x00word\n")
        (where / "empty").write_bytes(b"")
        (where / "dir").mkdir(exist_ok=True)
        return cls(str(where / "binary"), str(where / "nul-line"), str(where / "empty"),
                   str(where / "dir"))

    def paths(self) -> list[str]:
        return [self.binary, self.nul_line, self.empty, self.directory,
                self.binary + "/../binary", self.directory + "/"]


def fixed(files: Files) -> list[Any]:
    """One value of every class, each tried on every field (explicit examples)."""
    return (WRONG_TYPES + EMPTY + NON_ASCII + CONTROL + XML_META + SHELL_META + PATHS
            + HUGE_TEXT + files.paths())


def each_fixed(files: Files, argument: str = "value") -> Callable[[Any], Any]:
    """Decorator: run a @given test on every fixed value of ``argument`` first."""
    def decorate(test: Any) -> Any:
        for value in reversed(fixed(files)):
            test = example(**{argument: value})(test)
        return test
    return decorate


def values(files: Files) -> st.SearchStrategy[Any]:
    """Any hostile value: the fixed classes above, plus generated text, numbers and
    containers."""
    return st.one_of(
        st.sampled_from(fixed(files)),
        st.text(max_size=30),
        st.text(alphabet=st.characters(codec="utf-8", max_codepoint=0x9f), max_size=12),
        st.integers(),
        st.floats(),
        st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
        st.binary(max_size=16),
    )


def twin(value: str) -> str:
    """``value`` with every character that could carry markup replaced by a plain letter
    (path separators kept): rendered in its place, it must give the same XML structure."""
    return re.sub(r"[^/A-Za-z0-9]", "a", value)


# -- URLs (issue 23): what an hvparam that accepts a URL, or a drive URI, may be handed ----
# The password every credential-carrying example uses: no message may contain it.
PASSWORD = "S3cretPW"
URL_HOSTS = ["h", "mirror.example", "Mirror.Example.", "1.2.3.4", "999.1.1.1", "1.2.3", "a..b",
             "-a", "a-", "a_b", "xn--bcher-kva.example", "h\u00fcbner.example", "[::1]",
             "[::ffff:1.2.3.4]", "[zz]", "[::1", "::1]", "::1", "[]", "[fe80::1%25eth0]",
             "[v1.x]", "[::1]x", "", " ", "h\x00", "h\t", "a" * 64, ".".join(["a"] * 130)]
URL_PORTS = ["", ":", ":0", ":1", ":80", ":65535", ":65536", ":99999", ":abc", ":-1", ":+80",
             ":8\u0663", ":\u00b2", ": 80", ":080", ":00000000080", "::80"]
URL_USERINFO = ["", "u@", f"u:{PASSWORD}@", f":{PASSWORD}@", "@", f"u:{PASSWORD}/x@",
                f"u:{PASSWORD}?x@", f"u:{PASSWORD}#x@", f"u:{PASSWORD}@h@"]
URL_TAILS = ["", "/", "/x.iso", "/a b.iso", "/x.iso?q=1#frag", "?q", "#f", "/%40x", "/a@b",
             "/vol/dir/img", "/\u00fc.iso", "/<x>&'\"", "/x\r\n.iso"]
URLS = ["http://h:99999/x.iso", "http://h:abc/x.iso", "http://[::1/x.iso", "https://[zz]/x.iso",
        f"http://u:{PASSWORD}@h/x.iso", f"ftp://{PASSWORD}@h/", "http://", "http:///x",
        "HTTP://h/x.iso", "file:///srv/x.iso", "http:/h/x.iso", "gluster://h:24007/vol/img",
        "rbd:pool/img", "https://h/" + "a" * 5000, "http://" + "a" * 100_000]


def urls(schemes: tuple[str, ...] = ("http", "https", "ftp", "ftps")
         ) -> st.SearchStrategy[str]:
    """URL-shaped strings: an accepted or a wrong scheme, credentials or not, and hosts,
    ports and tails from the lists above or generated."""
    scheme = st.sampled_from([*schemes, "HTTP", "file", "gopher", "h"])
    host = st.one_of(st.sampled_from(URL_HOSTS), st.text(max_size=10))
    port = st.one_of(st.sampled_from(URL_PORTS), st.integers(-5, 70000).map(lambda p: f":{p}"),
                     st.text(max_size=6).map(lambda t: ":" + t))
    userinfo = st.sampled_from(URL_USERINFO)
    tail = st.one_of(st.sampled_from(URL_TAILS), st.text(max_size=12).map(lambda t: "/" + t))
    return st.one_of(st.sampled_from(URLS),
                     st.builds(lambda s, u, h, p, t: f"{s}://{u}{h}{p}{t}",
                               scheme, userinfo, host, port, tail))


def each_url(scheme: str = "http", argument: str = "value") -> Callable[[Any], Any]:
    """Decorator: run a @given test on every fixed hostile URL, then on one URL of
    ``scheme`` per host, port, credential and tail above."""
    combos = (URLS + [f"{scheme}://{h}/vol/x.iso" for h in URL_HOSTS]
              + [f"{scheme}://h{p}/vol/x.iso" for p in URL_PORTS]
              + [f"{scheme}://{u}h/vol/x.iso" for u in URL_USERINFO]
              + [f"{scheme}://h.example:990{t}" for t in URL_TAILS])

    def decorate(test: Any) -> Any:
        for value in reversed(combos):
            test = example(**{argument: value})(test)
        return test
    return decorate
