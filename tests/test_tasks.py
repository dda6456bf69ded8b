"""The task spec: layout, serialisation, and errors that name the problem."""

import pytest
import torch

from bfdkern.tasks import KIND_CODES, MISSING, KernelLayout, Task, TaskSpec, blades_spec


def test_blades_layout_packs_columns_in_order():
    spec = blades_spec()
    assert spec.names[:4] == ("iso", "aperture", "exposure_time", "focal_length")
    assert spec.num_tasks == 11
    # 4 ordinal heads of 3 levels + 10 makes + 7 + 3 + 2 + 9 + 2 (binary) + 2 (regions)
    assert spec.num_columns == 4 * 3 + 10 + 7 + 3 + 2 + 9 + 2 + 2
    assert [t.num_columns for t in spec if t.kind == "ordinal"] == [3] * 4
    # Zou25's raw scores: one column an ordinal head; the targets are the same
    raw = blades_spec(ordinal_levels=1)
    assert raw.num_columns == spec.num_columns - 4 * 2 and raw.num_targets == spec.num_targets
    assert spec.num_targets == 9 + 1 + 2
    assert spec.outer_indices == (spec.index("manipulated"),)
    ends = [spec.columns(k).stop for k in range(spec.num_tasks)]
    assert ends[-1] == spec.num_columns and ends == sorted(ends)
    assert spec["make"].gamma == 2.0 and spec["manipulated"].gamma == 0.0


def test_roundtrip_through_dict_and_kernel_layout():
    spec = blades_spec(sigma=0.7)
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    rebuilt = TaskSpec.from_layout(spec.layout)
    assert rebuilt.col_offsets == spec.col_offsets and rebuilt.target_offsets == spec.target_offsets
    assert [t.kind for t in rebuilt] == [t.kind for t in spec]
    assert rebuilt.layout == spec.layout and hash(rebuilt.layout) == hash(spec.layout)


def test_kernel_layout_lists_each_task():
    spec = TaskSpec((Task("a", "ordinal", 3), Task("b", "multilabel", 2, gamma=1.5)), sigma=0.3, delta=1e-6)
    layout = spec.layout
    assert layout == KernelLayout(
        (KIND_CODES["ordinal"], KIND_CODES["multilabel"]), (0, 3), (3, 2), (0, 1), (0.0, 1.5), 0.3, 1e-6
    )
    assert KernelLayout.of(*(list(x) if isinstance(x, tuple) else x for x in layout)) == layout
    with pytest.raises(ValueError, match="packed contiguously"):
        TaskSpec.from_layout(layout._replace(col_offsets=(0, 2)))


def test_empty_targets_are_missing():
    t = blades_spec().empty_targets(3, dtype=torch.float64)
    assert t.shape == (3, 12) and torch.isnan(t).all()
    assert MISSING != MISSING  # NaN: the marker never equals a label


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Task("x", "binary", 3), "binary task has 2 columns"),
        (lambda: Task("x", "nominal", 3), "unknown kind"),
        (lambda: Task("x", "categorical", 3, ("a", "b")), "2 class names for 3 columns"),
        (lambda: TaskSpec((Task("a", "ordinal", 1), Task("a", "ordinal", 1))), "duplicate task names"),
        (lambda: TaskSpec.from_dict({"tasks": [{"kind": "ordinal"}]}), "missing or malformed field"),
    ],
)
def test_bad_specs_name_the_problem(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_subset_keeps_order_and_rejects_unknown():
    spec = blades_spec()
    sub = spec.subset(["region", "iso", "manipulated"])
    assert sub.names == ("iso", "manipulated", "region")
    with pytest.raises(KeyError, match="unknown tasks"):
        spec.subset(["iso", "shoe_size"])
