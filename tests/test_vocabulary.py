"""The vocabulary: one torch-free place for columns, schemes, quantities, presets, labels, colours."""
import subprocess
import sys

from varprobe import vocabulary as v


def test_vocabulary_imports_nothing_heavy():
    code = ("import sys, varprobe.vocabulary\n"
            "heavy = [m for m in ('torch', 'pandas', 'numpy', 'pyarrow', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_quantity_has_a_definition_and_a_short_label_and_presets_name_only_quantities():
    assert all(v.QUANTITIES[q] for q in v.QUANTITIES)
    assert set(v.QUANTITIES) <= set(v.SHORT), sorted(set(v.QUANTITIES) - set(v.SHORT))
    for name, members in v.PRESETS.items():
        assert set(members) <= set(v.QUANTITIES), (name, sorted(set(members) - set(v.QUANTITIES)))
    assert v.PRESETS["all"] == tuple(v.QUANTITIES)


def test_columns_are_partitioned_by_type_and_every_scheme_has_its_colour():
    assert sorted(v.INT_COLUMNS + v.STRING_COLUMNS + v.FLOAT_COLUMNS) == sorted(v.COLUMNS)
    assert len(set(v.COLUMNS)) == len(v.COLUMNS)
    assert set(v.SCHEME_COLORS) == set(v.SCHEMES)
    assert len(set(v.SCHEME_COLORS.values()) | set(v.EXTRA_COLORS)) == len(v.SCHEMES) + len(v.EXTRA_COLORS)


def test_the_package_uses_the_vocabulary_instead_of_restating_it():
    from varprobe.layers import SCHEMES
    from varprobe.probe import PRESETS, QUANTITIES
    from varprobe.probe.table import COLUMNS as probe_columns
    from varprobe.record.schema import COLUMNS as record_columns
    assert SCHEMES is v.SCHEMES and PRESETS is v.PRESETS and QUANTITIES is v.QUANTITIES
    assert probe_columns is v.COLUMNS and record_columns is v.COLUMNS
