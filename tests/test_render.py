"""Drawing a pipe: ``to_dot`` and ``to_mermaid`` give one node per stage, edges in order,
groups by where each stage runs (from the planner), labels escaped, the same text each time."""

from __future__ import annotations

import re

import pytest

import datapipes as dp
from datapipes.plan import plan
from datapipes.testing.functions import double, is_even, repeat_twice

pytestmark = pytest.mark.timeout(60)


def representative():
    """Every place a stage can run, and the workers twice: the shuffle runs in between."""
    return (
        dp.from_sequence(range(10))
        | dp.shuffle()
        | dp.map(float)
        | dp.filter(bool)
        | dp.batch(4)
        | dp.collate()
    )


GOLDEN_DOT = """\
digraph pipe {
  node [shape=box];
  subgraph cluster_0_workers {
    label="worker processes";
    s0 [label="from_sequence(range(0, 10))", tooltip="each worker fetches the elements it needs by index"];
  }
  subgraph cluster_1_main {
    label="main process (head)";
    s1 [label="shuffle()", tooltip="index arithmetic, no element is read"];
  }
  subgraph cluster_2_workers {
    label="worker processes";
    s2 [label="map(float)", tooltip="per element"];
    s3 [label="filter(bool)", tooltip="per element"];
  }
  subgraph cluster_3_tail {
    label="main process (tail)";
    s4 [label="batch(4)", tooltip="needs the stream in order: a filter or flat_map before it changes the count"];
    s5 [label="collate()", tooltip="after batch(4)"];
  }
  s0 -> s1;
  s1 -> s2;
  s2 -> s3;
  s3 -> s4;
  s4 -> s5;
}"""  # noqa: E501 (the tooltips are one line each)

GOLDEN_MERMAID = """\
flowchart TD
  subgraph workers_0 ["worker processes"]
    s0["from_sequence(range(0, 10))"]
  end
  subgraph main_1 ["main process (head)"]
    s1["shuffle()"]
  end
  subgraph workers_2 ["worker processes"]
    s2["map(float)"]
    s3["filter(bool)"]
  end
  subgraph tail_3 ["main process (tail)"]
    s4["batch(4)"]
    s5["collate()"]
  end
  s0 --> s1
  s1 --> s2
  s2 --> s3
  s3 --> s4
  s4 --> s5"""

PIPES = {
    "representative": representative,
    "fragment": lambda: dp.map(float) | dp.batch(2),
    "one stage": lambda: dp.from_sequence([1, 2, 3]),
    "stream": lambda: (
        dp.from_iterable([1, 2, 3]) | dp.shuffle(buffer=2) | dp.map(double) | dp.skip(1)
    ),
    "many": lambda: (
        dp.from_sequence(range(10))
        | dp.prefetch(2)
        | dp.shard_by_rank(rank=0, world_size=2)
        | dp.map(double)
        | dp.enumerate()
        | dp.flat_map(repeat_twice)
        | dp.take(5)
        | dp.batch(2)
        | dp.unbatch()
        | dp.filter(is_even)
    ),
    "same stage twice": lambda: dp.from_sequence([1]) | dp.map(double) | dp.map(double),
    "quotes": lambda: dp.from_sequence(["a", 'b"', "c\\d"]) | dp.map(lambda x: x),
    "empty": dp.Pipe,
}

DOT_NODE = re.compile(r'^ *(s\d+) \[label="((?:[^"\\]|\\.)*)"(?:, tooltip="(?:[^"\\]|\\.)*")?\];$')
DOT_EDGE = re.compile(r"^  (s\d+) -> (s\d+);$")
DOT_CLUSTER = re.compile(r"^  subgraph cluster_\d+_(main|workers|tail) \{$")
MERMAID_NODE = re.compile(r'^ *(s\d+)\["([^"]*)"\]$')
MERMAID_EDGE = re.compile(r"^  (s\d+) --> (s\d+)$")
MERMAID_GROUP = re.compile(r'^  subgraph (main|workers|tail)_\d+ \["[^"]*"\]$')


def dot_unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)


def mermaid_unescape(text: str) -> str:
    codes = {"quot": '"', "lt": "<", "gt": ">"}
    return re.sub(r"#(\w+);", lambda m: codes.get(m[1]) or chr(int(m[1])), text)


def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str]], list[list[str]]]:
    """Nodes (id -> label), edges, and the node ids of each cluster, checking every line."""
    lines = text.split("\n")
    assert lines[:2] == ["digraph pipe {", "  node [shape=box];"]
    assert lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    clusters: list[list[str]] = []
    cluster: list[str] | None = None
    for line in lines[2:-1]:
        if DOT_CLUSTER.match(line):
            assert cluster is None, "clusters do not nest"
            cluster = []
        elif line == "  }":
            assert cluster, "a cluster holds at least one stage"
            clusters.append(cluster)
            cluster = None
        elif re.fullmatch(r'    label="[^"]+";', line):
            assert cluster == [], "a cluster's label comes first"
        elif node := DOT_NODE.match(line):
            assert node[1] not in nodes
            nodes[node[1]] = dot_unescape(node[2])
            if cluster is not None:
                cluster.append(node[1])
        elif edge := DOT_EDGE.match(line):
            edges.append((edge[1], edge[2]))
        else:
            raise AssertionError(f"unexpected line: {line!r}")
    assert cluster is None
    return nodes, edges, clusters


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str]], list[list[str]]]:
    """Nodes (id -> label), edges, and the node ids of each subgraph, checking every line."""
    lines = text.split("\n")
    assert lines[0] == "flowchart TD"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    groups: list[list[str]] = []
    group: list[str] | None = None
    for line in lines[1:]:
        if MERMAID_GROUP.match(line):
            assert group is None, "subgraphs do not nest"
            group = []
        elif line == "  end":
            assert group, "a subgraph holds at least one stage"
            groups.append(group)
            group = None
        elif node := MERMAID_NODE.match(line):
            assert node[1] not in nodes
            nodes[node[1]] = mermaid_unescape(node[2])
            if group is not None:
                group.append(node[1])
        elif edge := MERMAID_EDGE.match(line):
            edges.append((edge[1], edge[2]))
        else:
            raise AssertionError(f"unexpected line: {line!r}")
    assert group is None
    return nodes, edges, groups


def ids(pipe: dp.Pipe) -> list[str]:
    return [f"s{i}" for i in range(len(pipe.stages))]


def where_runs(pipe: dp.Pipe) -> list[list[str]]:
    """The node ids in each run of consecutive stages that run in the same place."""
    runs: list[list[str]] = []
    last = None
    for i, placement in enumerate(plan(pipe).placements):
        if placement.where != last:
            runs.append([])
            last = placement.where
        runs[-1].append(f"s{i}")
    return runs


def test_dot_golden():
    assert representative().to_dot() == GOLDEN_DOT


def test_mermaid_golden():
    assert representative().to_mermaid() == GOLDEN_MERMAID


def test_fragment_is_a_plain_chain():
    pipe = dp.map(float) | dp.batch(2)
    assert pipe.to_dot() == (
        "digraph pipe {\n"
        "  node [shape=box];\n"
        '  s0 [label="map(float)"];\n'
        '  s1 [label="batch(2)"];\n'
        "  s0 -> s1;\n"
        "}"
    )
    assert pipe.to_mermaid() == 'flowchart TD\n  s0["map(float)"]\n  s1["batch(2)"]\n  s0 --> s1'


def test_quotes_and_backslashes_are_escaped():
    pipe = dp.from_sequence(["a", 'b"', "c\\d"]) | dp.map(lambda x: x)
    source, function = repr(pipe.stages[0]), repr(pipe.stages[1])
    assert source == """from_sequence(['a', 'b"', 'c\\\\d'])"""
    assert function.startswith("map(") and function.endswith(".<lambda>)")
    dot = pipe.to_dot()
    assert """s0 [label="from_sequence(['a', 'b\\"', 'c\\\\\\\\d'])", """ in dot
    assert f's1 [label="{function}", ' in dot  # < and > need no escape in a DOT string
    mermaid = pipe.to_mermaid()
    assert """s0["from_sequence(['a', 'b#quot;', 'c\\\\d'])"]""" in mermaid
    assert f's1["{function.replace("<", "#lt;").replace(">", "#gt;")}"]' in mermaid
    assert parse_dot(dot)[0] == parse_mermaid(mermaid)[0] == {"s0": source, "s1": function}


def test_mermaid_entities_in_a_label_stay_text():
    pipe = dp.from_sequence(["#quot;", "#", "<b>"])
    text = pipe.to_mermaid()
    assert """s0["from_sequence(['#35;quot;', '#35;', '#lt;b#gt;'])"]""" in text
    assert parse_mermaid(text)[0] == {"s0": repr(pipe)}


@pytest.mark.parametrize("name", PIPES)
@pytest.mark.parametrize("parse", [parse_dot, parse_mermaid], ids=["dot", "mermaid"])
def test_one_node_per_stage_and_edges_in_order(name, parse):
    pipe = PIPES[name]()
    render = pipe.to_dot if parse is parse_dot else pipe.to_mermaid
    nodes, edges, groups = parse(render())
    assert list(nodes) == ids(pipe)
    assert list(nodes.values()) == [repr(stage) for stage in pipe.stages]
    assert edges == list(zip(ids(pipe), ids(pipe)[1:], strict=False))
    assert groups == (where_runs(pipe) if pipe.is_runnable else [])


@pytest.mark.parametrize("name", PIPES)
def test_groups_say_where_they_run(name):
    pipe = PIPES[name]()
    if not pipe.is_runnable:
        return
    labels = {
        "main": "main process (head)",
        "workers": "worker processes",
        "tail": "main process (tail)",
    }
    wheres = [p.where for p in plan(pipe).placements]
    runs = [w for i, w in enumerate(wheres) if i == 0 or wheres[i - 1] != w]
    dot_labels = re.findall(r'^    label="([^"]+)";$', pipe.to_dot(), re.MULTILINE)
    mermaid_labels = re.findall(r'^  subgraph \w+ \["([^"]+)"\]$', pipe.to_mermaid(), re.MULTILINE)
    assert dot_labels == mermaid_labels == [labels[w] for w in runs]
    tooltips = re.findall(r'tooltip="([^"]*)"', pipe.to_dot())
    assert tooltips == [p.why for p in plan(pipe).placements]


@pytest.mark.parametrize("name", PIPES)
def test_dot_is_balanced(name):
    text = PIPES[name]().to_dot()
    # outside quoted strings, braces and brackets pair up and every statement ends in ";"
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert '"' not in bare.replace('""', "")
    depth = 0
    for line in bare.split("\n"):
        depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
        assert depth >= 0
        stripped = line.strip()
        assert stripped.endswith(("{", "}", ";")), line
    assert depth == 0


@pytest.mark.parametrize("name", PIPES)
def test_output_is_deterministic(name):
    assert PIPES[name]().to_dot() == PIPES[name]().to_dot()
    assert PIPES[name]().to_mermaid() == PIPES[name]().to_mermaid()
