"""DeepSpeed hostfiles and --include filters, read before a sweep starts."""

from __future__ import annotations

import socket

import pytest

from llmbench.errors import UserError
from llmbench.measure.launch.hostfile import (
    format_hostfile,
    local_names,
    parse_hostfile,
    parse_include,
    read_hostfile,
)


def test_hosts_keep_file_order_and_comments_are_skipped():
    text = "# cluster\nnode-b slots=8\n\nnode-a slots=4 max_slots=4\n"
    hosts = parse_hostfile(text, "h")
    assert list(hosts.items()) == [("node-b", 8), ("node-a", 4)]
    assert format_hostfile(hosts) == "node-b slots=8\nnode-a slots=4\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node-a slots=2\nnode-a slots=2\n", "h:2: host node-a is listed twice"),
        ("node-a slots=0\n", "h:1: host node-a has no slots"),
        ("node-a\n", "h:1: 'node-a' is not of the form 'HOST slots=N'"),
        ("# nothing\n", "h: no 'HOST slots=N' line"),
    ],
)
def test_a_bad_hostfile_is_one_line_naming_the_line(text, message):
    with pytest.raises(UserError) as err:
        parse_hostfile(text, "h")
    assert str(err.value) == message


def test_a_missing_hostfile_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"nope: cannot read the hostfile: No such file"):
        read_hostfile(tmp_path / "nope")


def test_include_selects_whole_hosts_or_slots_in_hostfile_order():
    hosts = {"node-a": 4, "node-b": 4}
    assert parse_include("node-b:1,0@node-a", hosts, "s") == {
        "node-a": [0, 1, 2, 3],
        "node-b": [0, 1],
    }
    with pytest.raises(UserError, match=r"run.include: host 'node-c' is not in the hostfile"):
        parse_include("node-c", hosts, "s")
    with pytest.raises(UserError, match=r"slots must be integers"):
        parse_include("node-a:x", hosts, "s")


def test_this_machine_is_known_by_its_names():
    names = local_names()
    assert {"localhost", "127.0.0.1", socket.gethostname()} <= names
