"""elastic_lib.control.codehash on small packages written here: what counts as a change of code and what does not."""

import textwrap

import pytest

from elastic_lib.control import codehash

TRAIN = '''
"""Training."""
import numpy as np

from .consts import RATE
from . import consts


def helper(x, scale=2):
    """Doubles."""
    return x * scale  # a comment


def compile_model(model):
    """Compiles."""
    lr = helper(RATE) + consts.OFFSET
    return np.float32(lr)


class Guard:
    """A callback."""
    limit = 3

    def on_batch(self, loss):
        return loss < self.limit

    def reset(self):
        return compile_model(None)


def make_param(default, doc, plumbing=False):
    return (default, doc, plumbing)


SETTING = make_param(1, "the doc line")

if __name__ == "__main__":
    print(compile_model(None))
'''
CONSTS = """
RATE = 0.01
OFFSET = 1
"""


def pkg(**files):
    base = {"__init__": "", "train": TRAIN, "consts": CONSTS}
    base.update({k: v and textwrap.dedent(v) for k, v in files.items()})
    return {k: v for k, v in base.items() if v is not None}


def recorded(sources):
    return codehash.module_units(codehash.package_hashes(sources), set(sources))


def changed(before, after):
    return codehash.changed(recorded(before), codehash.package_hashes(after))


BASE = pkg()


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace("# a comment", "# another comment\n    # and one more"),
        lambda s: s.replace('"""Doubles."""', '"""Multiplies x by scale.\n\n    Long docstring.\n    """'),
        lambda s: s.replace('"""Training."""', ""),
        lambda s: s.replace("return x * scale", "return (\n        x\n        * scale\n    )"),
        lambda s: s.replace("def helper(x, scale=2):", "def helper(x,\n           scale=2):"),
        lambda s: s.replace('"the doc line"', "'another doc line, which is documentation'"),
        lambda s: s.replace("print(compile_model(None))", 'print("a script")'),
        lambda s: s.replace("import numpy as np", "import numpy as np  # arrays\nimport os"),
    ],
)
def test_comments_docstrings_formatting_doc_lines_and_main_blocks_do_not_count(edit):
    assert changed(BASE, pkg(train=edit(TRAIN))) == []


def test_moving_a_function_to_another_module_does_not_count():
    moved = TRAIN.replace(
        '''def helper(x, scale=2):
    """Doubles."""
    return x * scale  # a comment
''',
        "from .helpers import helper\n",
    )
    after = pkg(train=moved, helpers="def helper(x, scale=2):\n    return x * scale\n")
    assert changed(BASE, after) == []


def test_renaming_a_function_and_its_callers_does_not_count():
    assert changed(BASE, pkg(train=TRAIN.replace("helper", "scaled"))) == []


def test_renaming_a_module_and_its_importers_does_not_count():
    after = pkg(train=TRAIN.replace("consts", "constants"), consts=None, constants=CONSTS)
    assert changed(BASE, after) == []


def test_a_module_split_into_a_package_with_re_exports_does_not_count():
    after = pkg(**{"consts": "from .values import RATE, OFFSET\n", "consts.values": CONSTS})
    assert changed(BASE, after) == []


@pytest.mark.parametrize(
    "edit, named",
    [
        (
            lambda s: s.replace("    return np.float32(lr)", "    lr = lr * 1\n    return np.float32(lr)"),
            ["train:compile_model"],
        ),
        (lambda s: s.replace("scale=2", "scale=3"), ["train:helper"]),
        (lambda s: s.replace("limit = 3", "limit = 4"), ["train:Guard"]),
        (lambda s: s.replace("return loss < self.limit", "return loss <= self.limit"), ["train:Guard.on_batch"]),
        (lambda s: s.replace("def reset(self):", "def restart(self):"), ["train:Guard"]),  # found by name
        (lambda s: s.replace("np.float32(lr)", "np.float64(lr)"), ["train:compile_model"]),
        (lambda s: s.replace("SETTING = make_param(1,", "SETTING = make_param(2,"), ["train:SETTING"]),
    ],
)
def test_a_change_in_code_names_the_unit_whose_own_code_changed(edit, named):
    assert changed(BASE, pkg(train=edit(TRAIN))) == named


def test_a_constant_read_elsewhere_is_named_and_reaches_its_readers():
    after = pkg(consts=CONSTS.replace("RATE = 0.01", "RATE = 0.02"))
    assert changed(BASE, after) == ["consts:RATE"]
    before, now = codehash.package_hashes(BASE), codehash.package_hashes(after)
    # Merkle: every unit that uses RATE, directly or not, has another hash now
    assert {k for k in before if before[k][0] != now[k][0]} == {
        "consts:RATE",
        "train:compile_model",
        "train:Guard",
        "train:Guard.reset",
    }


def test_a_call_retargeted_to_another_existing_function_is_named():
    two = TRAIN.replace("def compile_model", "def other(x, scale=2):\n    return x * scale * 1\n\n\ndef compile_model")
    after = two.replace("lr = helper(RATE)", "lr = other(RATE)")
    assert changed(pkg(train=two), pkg(train=after)) == ["train:compile_model"]


def test_mutual_recursion_hashes_and_changes():
    src = "def even(n):\n    return n == 0 or odd(n - 1)\n\n\ndef odd(n):\n    return n != 0 and even(n - 1)\n"
    base = pkg(rec=src)
    assert changed(base, pkg(rec=src.replace("even", "is_even"))) == []
    assert changed(base, pkg(rec=src.replace("n != 0", "n > 0"))) == ["rec:odd"]


def test_local_names_that_shadow_library_names_stay_local():
    src = "from .consts import RATE\n\n\ndef f(RATE):\n    return RATE * 2\n"
    base = pkg(loc=src)
    # the parameter is a local: a change of the library constant does not reach f
    before, after = (codehash.package_hashes(p) for p in (base, pkg(loc=src, consts=CONSTS.replace("0.01", "0.5"))))
    assert before["loc:f"] == after["loc:f"]


def test_notebook_text_ignores_comments_and_formatting_but_not_code():
    cells = ["# parameters\nbackbone = 'vgg16'  # registry name\n", "x = f(1,\n      2)\n", "%matplotlib inline"]
    same = ['backbone = "vgg16"\n', "# a comment\nx = f(1, 2)\n", "%matplotlib inline"]
    assert codehash.notebook_text(cells) == codehash.notebook_text(same)
    assert codehash.notebook_text(cells) != codehash.notebook_text(["backbone = 'vgg19'\n", *cells[1:]])
    assert codehash.notebook_text(cells) != codehash.notebook_text([*cells[:2], "%matplotlib widget"])


def test_canonical_text_is_independent_of_the_python_version_s_empty_fields():
    """The canonical text is written from node types and non-empty fields only (no line numbers, no
    empty lists such as Python 3.12's ``type_params``), so it reads the same on every Python."""
    sources = {"__init__": "", "m": "def f(x: int = 1) -> int:\n    return x + 1\n"}
    p = codehash.Package(sources)
    text = codehash._unit_text(p, p.units["m:f"], lambda k: k)
    assert text == (
        "FunctionDef(args=arguments(args=[arg(arg='x',annotation=Name(id='int'))],"
        "defaults=[Constant(int:1)]),body=[Return(value=BinOp(left=Name(id='x'),op=Add(),"
        "right=Constant(int:1)))],returns=Name(id='int'))"
    )


REG = """
class Entry:
    def __init__(self, name, size):
        self.name, self.size = name, size


REGISTRY = {e.name: e for e in [
    Entry("small", 8),
    Entry("large", 32),
]}
CHOICES = ("a", "b")


def get(name):
    return REGISTRY[name]
"""


def test_an_entry_added_to_a_table_leaves_every_unit_but_a_changed_or_removed_entry_is_named():
    base = pkg(reg=REG)
    added = REG.replace('    Entry("large", 32),\n', '    Entry("large", 32),\n    Entry("huge", 64),\n')
    assert changed(base, pkg(reg=added)) == []
    assert changed(base, pkg(reg=REG.replace('("a", "b")', '("a", "b", "c")'))) == []
    assert changed(base, pkg(reg=REG.replace('Entry("large", 32)', 'Entry("large", 33)'))) == ["reg:REGISTRY['large']"]
    assert changed(base, pkg(reg=REG.replace('    Entry("small", 8),\n', ""))) == [
        "reg:REGISTRY['large']",
        "reg:REGISTRY['small']",
    ]
    assert changed(base, pkg(reg=REG.replace('("a", "b")', '("b", "a")'))) == ["reg:CHOICES[0]", "reg:CHOICES[1]"]
    # how the table is built still counts
    assert changed(base, pkg(reg=REG.replace("{e.name: e for e", "{e.name.upper(): e for e"))) == ["reg:REGISTRY"]


RUN = """
from .consts import RATE


def registered(fn):
    return fn


def train(x):
    return x * RATE


def check_tolerance(a, b):  # tooling: the run never calls it
    return abs(a - b) < 1


def describe_machine():
    return "cpu"


def setup():
    return describe_machine()


@registered
def found_by_name():
    return 1


LOG = setup()
"""
NOTEBOOK = "from elastic_lib import run\nrun.train(2)\n"


def _run_units(sources, opaque=()):
    hashes = codehash.package_hashes({**sources, codehash.NOTEBOOK_MODULE: NOTEBOOK}, opaque)
    return codehash.run_units(hashes, {"run", "consts"})


def test_a_run_records_what_its_notebook_and_imports_can_reach():
    units = set(_run_units(pkg(run=RUN), opaque=("run:describe_machine",)))
    # the notebook's call and what it reads; the import's own statements and what they call; a
    # decorated function (a decorator may register it, to be found by name)
    assert units == {"run:train", "consts:RATE", "run:LOG", "run:setup", "run:found_by_name", "run:registered"}
    # tooling the run cannot reach, and an opaque unit (named where used, not hashed), are left out
    changed_tooling = pkg(run=RUN.replace("< 1", "< 2"))
    assert _run_units(changed_tooling, ("run:describe_machine",)) == _run_units(pkg(run=RUN), ("run:describe_machine",))
    described = pkg(run=RUN.replace('return "cpu"', 'return "cpu, 2 cores"'))
    assert _run_units(described, ("run:describe_machine",)) == _run_units(pkg(run=RUN), ("run:describe_machine",))
    assert _run_units(described) != _run_units(pkg(run=RUN))  # not opaque: its change reaches setup and LOG
