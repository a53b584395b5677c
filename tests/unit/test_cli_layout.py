"""Line wrapping that never breaks inside a name, and loader chains cut to their deciding steps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fixdnn.cli.layout import concise_chain, wrap

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=24)
PATH = st.lists(NAME, min_size=1, max_size=12).map(lambda parts: "/" + "/".join(parts))


def _names(text: str) -> list[str]:
    return [n for token in text.split() for n in token.split("/") if n]


@given(words=st.lists(st.one_of(NAME, PATH), min_size=1, max_size=12), width=st.integers(30, 100),
       indent=st.integers(0, 4))
def test_wrap_keeps_every_name_whole_and_in_order(words, width, indent):
    text = " " * indent + " ".join(words)
    lines = wrap(text, width, indent)
    # every name comes out whole, once, in order: no name was cut, nothing lost or repeated
    assert _names("\n".join(lines)) == _names(text)
    for line in lines:
        # a line is wider than asked only when it holds one piece that cannot be cut after a '/'
        if len(line) > width:
            assert len(line.split()) == 1 or len(line.strip().split(" ")) == 1, lines


def test_wrap_breaks_a_long_path_after_slashes_and_never_in_a_pipe():
    path = "/tmp/env/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9"
    assert wrap(f"torch 2.14.1: loads {path} (9.24.0)", 40) == [
        "torch 2.14.1: loads",
        "    /tmp/env/lib/python3.11/",
        "    site-packages/nvidia/cudnn/lib/",
        "    libcudnn.so.9 (9.24.0)",
    ]
    assert wrap("x " * 200, None) == ["x " * 200]


CHAIN = (
    "libcudnn.so.9 for /env/tf/libtensorflow_framework.so.2: not loaded: cannot open shared object file",
    "  DT_RPATH not searched: /env/tf/libtensorflow_framework.so.2 has DT_RUNPATH: skipped",
    "  DT_RUNPATH[0] of /env/tf/x.so: $ORIGIN/../nvidia/cudnn/lib → /env/nvidia/cudnn/lib: absent",
    "  LD_LIBRARY_PATH[0] → /old/lib: libcudnn.so.9; wrong ELF class (32-bit, this process is 64-bit): skipped",
    "  ld.so.cache: no entry for libcudnn.so.9: absent",
    "on disk: /env/other/libcudnn.so.9 (cuDNN 9.1.0)",
)


def test_concise_chain_keeps_the_deciding_steps_and_counts_the_rest():
    assert concise_chain(CHAIN) == [
        CHAIN[0],
        CHAIN[3],
        "  (3 more loader steps found nothing there; fixdnn -v shows each)",
        CHAIN[5],
    ]
    found = ("libcudnn.so.9 for /x.so → /env/lib/libcudnn.so.9 (via DT_RUNPATH)",
             "  DT_RUNPATH[0] of /x.so: $ORIGIN/lib → /env/lib: found libcudnn.so.9")
    assert concise_chain(found) == list(found)
    assert concise_chain(()) == []
