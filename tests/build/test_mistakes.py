"""A user's mistakes in a model.toml build: each gets one clear line naming the file, key,
class or layer at fault, exit code 2, and leaves --out as it was. All of them fail before any
quantization, so these tests are fast (small synthetic images, in-process ``main``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torchvision.models import resnet18, resnet34

from build import data
from build.__main__ import main
from build.errors import DataError
from service.inference.preprocess import PreprocessSpec
from tests.build import own_models as om

LABELS = om.SHAPES
CONFIG = """
name = "shapes"
[source]
torchvision = "resnet18"
weights = "ckpt.pt"
[labels]
file = "labels.txt"
[preprocess]
resize = 64
crop = 56
[data]
dir = "images"
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return om.class_folders(tmp_path_factory.mktemp("images"), per_class=10, seed=3)


@pytest.fixture(scope="module")
def resnet_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    torch.manual_seed(0)
    torch.save(resnet18(num_classes=len(LABELS)).state_dict(), path)
    return path


@pytest.fixture
def project(tmp_path: Path, images: Path, resnet_state: Path) -> Path:
    """A user's folder: model.toml, labels.txt, ckpt.pt, images/<class>/..."""
    folder = tmp_path / "project"
    shutil.copytree(images, folder / "images")
    (folder / "ckpt.pt").symlink_to(resnet_state)
    om.labels_file(folder / "labels.txt", LABELS)
    om.write_config(folder / "model.toml", CONFIG)
    return folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An --out that already holds a built model: a failure must leave it exactly as it was."""
    root = tmp_path / "artifacts"
    (root / "shapes").mkdir(parents=True)
    (root / "shapes" / "manifest.json").write_text("the model that serves today\n")
    return root


def build_error(project: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run the build; assert exit 2, one error line, nothing written; return the message."""
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main(["--config", str(project / "model.toml"), "--out", str(out), "-q", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("build: error: "), err
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing half-written
    assert (out / "shapes" / "manifest.json").read_text() == "the model that serves today\n"
    return err[-1].removeprefix("build: error: ")


def edit(project: Path, old: str, new: str) -> None:
    path = project / "model.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# --- the config file --------------------------------------------------------------------------


def test_config_file_missing(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    (project / "model.toml").unlink()
    message = build_error(project, out, capsys)
    assert message == f"config file {project / 'model.toml'} does not exist"


def test_config_not_toml(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    (project / "model.toml").write_text("name = shapes\n")
    message = build_error(project, out, capsys)
    assert message.startswith(f"{project / 'model.toml'}: not valid TOML: Invalid value")


def test_unknown_key_is_an_error_not_a_default(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    edit(project, "[data]", "[gate]\nmax_top1_dorp = 3\n[data]")
    message = build_error(project, out, capsys)
    assert message == f"{project / 'model.toml'}: [gate] max_top1_dorp: is not a known key"


def test_missing_section(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    edit(project, '[labels]\nfile = "labels.txt"\n', "")
    message = build_error(project, out, capsys)
    assert message == f"{project / 'model.toml'}: [labels]: is required"


def test_two_sources(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    edit(project, 'weights = "ckpt.pt"', 'weights = "ckpt.pt"\nonnx = "model.onnx"')
    message = build_error(project, out, capsys)
    assert message.endswith(
        "[source]: give exactly one of torchvision, efficientnet_lite or onnx "
        "(found torchvision, onnx)"
    )


def test_unknown_torchvision_architecture(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    edit(project, '"resnet18"', '"resnet19"')
    message = build_error(project, out, capsys)
    assert message.startswith(
        "[source] torchvision: 'resnet19' is not a torchvision classification architecture "
        "(did you mean resnet18,"
    )


@pytest.mark.parametrize(
    ("file", "key", "kind"),
    [
        ("labels.txt", "[labels] file", "file"),
        ("ckpt.pt", "[source] weights", "file"),
        ("images", "[data] dir", "folder"),
    ],
)
def test_missing_files(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str], file: str, key: str, kind: str
):
    target = project / file
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    message = build_error(project, out, capsys)
    assert message == f"{project / 'model.toml'}: {key}: {kind} {target} does not exist"


def test_labels_with_a_blank_line(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    (project / "labels.txt").write_text("red_disc\n\ngreen_square\n")
    message = build_error(project, out, capsys)
    assert message == f"model.toml: [labels] file {project / 'labels.txt'}: line 2 is empty"


def test_one_class_is_not_a_classifier(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    (project / "labels.txt").write_text("red_disc\n")
    message = build_error(project, out, capsys)
    assert message == (
        f"{project / 'labels.txt'} has 1 label; a classifier needs at least 2 classes (one "
        "logit per class; a single sigmoid logit is not served)"
    )


# --- the checkpoint ---------------------------------------------------------------------------


def test_head_size_comes_from_the_checkpoint_and_must_match_the_labels(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    shutil.rmtree(project / "images" / "purple_cross")
    om.labels_file(project / "labels.txt", LABELS[:4])
    message = build_error(project, out, capsys)
    assert (
        message
        == f"{project / 'ckpt.pt'} has a 5-class head but {project / 'labels.txt'} has 4 labels"
    )


def test_checkpoint_with_a_mismatched_layer_names_key_and_shapes(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    state = resnet18(num_classes=5).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    (project / "ckpt.pt").unlink()
    torch.save(state, project / "ckpt.pt")
    message = build_error(project, out, capsys)
    assert message == (
        f"{project / 'ckpt.pt'} does not fit torchvision.models.resnet18: layer2.0.conv1.weight "
        "has shape [128, 64, 5, 5] in the checkpoint, [128, 64, 3, 3] in the architecture"
    )


def test_checkpoint_of_a_deeper_architecture_names_the_first_extra_key(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    (project / "ckpt.pt").unlink()
    torch.save(resnet34(num_classes=5).state_dict(), project / "ckpt.pt")
    message = build_error(project, out, capsys)
    assert message.startswith(
        f"{project / 'ckpt.pt'} does not fit torchvision.models.resnet18: the checkpoint's "
        "layer1.2.conv1.weight (shape [64, 64, 3, 3]) is not in the architecture; "
    )


def test_a_whole_pickled_model_is_not_a_state_dict(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    (project / "ckpt.pt").unlink()
    torch.save(resnet18(num_classes=5), project / "ckpt.pt")
    message = build_error(project, out, capsys)
    assert message.startswith(f"{project / 'ckpt.pt'} is not a loadable PyTorch state dict (")
    assert message.endswith("save model.state_dict() with torch.save, not the whole model")


def test_training_checkpoint_nesting_and_dataparallel_prefix_are_understood(resnet_state: Path):
    from build.network import read_checkpoint

    state = torch.load(resnet_state, weights_only=True)
    nested = resnet_state.with_name("nested.pt")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, nested)

    assert read_checkpoint(nested).keys() == state.keys()


# --- an ONNX source ---------------------------------------------------------------------------


def _onnx(
    path: Path,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto] | None = None,
) -> Path:
    graph = helper.make_graph(nodes, "user", inputs, outputs, initializer=inits or [])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _pooled_classifier(path: Path, classes: int) -> Path:
    """GlobalAveragePool -> Flatten -> Gemm: a real (tiny) image classifier."""
    weight = numpy_helper.from_array(np.ones((classes, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.arange(classes, dtype=np.float32), "b")
    return _onnx(
        path,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", classes])],
        [
            helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
        ],
        [weight, bias],
    )


def use_onnx(project: Path, path: Path) -> None:
    edit(project, 'torchvision = "resnet18"\nweights = "ckpt.pt"', f'onnx = "{path.name}"')


def test_onnx_input_must_be_float(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    _onnx(
        project / "m.onnx",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["n", 16])],
        [helper.make_node("Identity", ["ids"], ["y"])],
    )
    use_onnx(project, project / "m.onnx")
    message = build_error(project, out, capsys)
    assert message == (
        f"{project / 'm.onnx'} is not an image classifier the build can serve: its input 'ids' "
        "is INT64; it must be float32 (NCHW)"
    )


def test_onnx_input_must_be_4d(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    _onnx(
        project / "m.onnx",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [helper.make_node("Relu", ["x"], ["y"])],
    )
    use_onnx(project, project / "m.onnx")
    message = build_error(project, out, capsys)
    assert message.endswith(
        "its input 'x' has shape ['n', 16], not 4-D; it must be [batch, 3, height, width]"
    )


def test_onnx_nhwc_input_is_named(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    _onnx(
        project / "m.onnx",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 56, 56, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 56, 56, 3])],
        [helper.make_node("Relu", ["x"], ["y"])],
    )
    use_onnx(project, project / "m.onnx")
    message = build_error(project, out, capsys)
    assert message.endswith("its input 'x' has 56 channels (it looks NHWC: export NCHW)")


def test_onnx_segmenter_is_not_a_classifier(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    _onnx(
        project / "m.onnx",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_node("Sigmoid", ["x"], ["mask"])],
    )
    use_onnx(project, project / "m.onnx")
    message = build_error(project, out, capsys)
    assert message.endswith(
        "its output 'mask' has shape ['n', 3, 'h', 'w']; a classifier's is [batch, classes] "
        "(a detector or a segmenter is not served here)"
    )


def test_onnx_with_two_outputs(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    _onnx(
        project / "m.onnx",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 3, "h", "w"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3, "h", "w"]),
        ],
        [
            helper.make_node("Relu", ["x"], ["boxes"]),
            helper.make_node("Sigmoid", ["x"], ["scores"]),
        ],
    )
    use_onnx(project, project / "m.onnx")
    message = build_error(project, out, capsys)
    assert message.endswith(
        "it has 2 outputs ('boxes', 'scores'); a classifier has one, [batch, classes]"
    )


def test_onnx_outputs_must_match_the_labels(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    use_onnx(project, _pooled_classifier(project / "m.onnx", classes=7))
    message = build_error(project, out, capsys)
    assert message == f"{project / 'm.onnx'} outputs 7 classes but the labels file has 5 labels"


def test_onnx_fixed_batch_is_refused_with_the_fix(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    # Traced at batch 1 with a hard-coded Reshape: the usual way a graph loses its batch axis.
    shape = numpy_helper.from_array(np.array([1, 3], np.int64), "shape")
    weight = numpy_helper.from_array(np.ones((5, 3), np.float32), "w")
    _onnx(
        project / "m.onnx",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 56, 56])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [
            helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Reshape", ["p", "shape"], ["f"]),
            helper.make_node("Gemm", ["f", "w"], ["y"], transB=1),
        ],
        [shape, weight],
    )
    use_onnx(project, project / "m.onnx")
    message = build_error(project, out, capsys)
    assert message.startswith(f"{project / 'm.onnx'} runs at batch 1 only (")
    assert message.endswith(
        "re-export it with a dynamic batch axis (torch.onnx.export(..., "
        "dynamic_axes={'input': {0: 'batch'}}))"
    )


def test_weights_option_with_an_onnx_source(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    use_onnx(project, _pooled_classifier(project / "m.onnx", classes=5))
    message = build_error(project, out, capsys, "--weights", "random")
    assert (
        message
        == f"--weights applies to a torch source; {project / 'model.toml'} names an ONNX file"
    )


def test_not_an_onnx_file(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    (project / "m.onnx").write_bytes(b"PK\x03\x04 not a protobuf")
    use_onnx(project, project / "m.onnx")
    message = build_error(project, out, capsys)
    assert message.startswith(f"{project / 'm.onnx'} is not a valid ONNX model: ")


# --- the images -------------------------------------------------------------------------------


def test_class_without_a_folder(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    shutil.rmtree(project / "images" / "blue_triangle")
    message = build_error(project, out, capsys)
    assert message == (
        f"class 'blue_triangle' has no folder {project / 'images' / 'blue_triangle'} (one "
        "sub-folder per label, named exactly as in the labels file)"
    )


def test_empty_class_folder(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    shutil.rmtree(project / "images" / "blue_triangle")
    (project / "images" / "blue_triangle").mkdir()
    message = build_error(project, out, capsys)
    assert message == f"class folder {project / 'images' / 'blue_triangle'} is empty"


def test_folder_not_in_the_labels(project: Path, out: Path, capsys: pytest.CaptureFixture[str]):
    (project / "images" / "blue_triangle").rename(project / "images" / "blue_triangles")
    message = build_error(project, out, capsys)
    assert message == (
        f"folder {project / 'images' / 'blue_triangles'} is not a class in the labels "
        "(did you mean 'blue_triangle'?)"
    )


def test_too_few_images_states_the_minimum(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    for extra in sorted((project / "images" / "green_square").iterdir())[4:]:
        extra.unlink()
    message = build_error(project, out, capsys)
    assert message == (
        f"class folder {project / 'images' / 'green_square'} has 4 usable images; at least 7 "
        "are needed (2 for calibration, 5 for evaluation)"
    )


def test_duplicate_labels_cannot_name_folders(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    om.labels_file(project / "labels.txt", [*LABELS, "red_disc"])
    message = build_error(project, out, capsys)
    assert message == (
        "the labels name 'red_disc' twice (lines 1 and 6): class folders cannot tell the two apart"
    )


def _break(paths: list[Path]) -> None:
    for path in paths:
        path.write_bytes(b"\xff\xd8 truncated")


def test_too_many_unreadable_images_are_counted_and_named(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str]
):
    broken = sorted((project / "images" / "red_disc").iterdir())[:3]
    _break(broken)
    message = build_error(project, out, capsys)
    assert message.startswith(
        "3 of 50 images could not be read (6.0%, more than the 5% [data] "
        "max_unreadable_fraction allows): "
    )
    for path in broken:
        assert str(path) in message


def test_a_few_unreadable_images_are_skipped_named_and_replaced(
    tmp_path: Path, images: Path, caplog: pytest.LogCaptureFixture
):
    root = shutil.copytree(images, tmp_path / "images")
    (broken,) = sorted((root / "red_disc").iterdir())[:1]
    _break([broken])
    folders = data.folder_split(
        root, list(LABELS), PreprocessSpec(64, 56), max_unreadable_fraction=0.1
    )

    assert [p for p, _ in folders.unreadable] == [broken]
    assert f"skipped unreadable image {broken}" in caplog.text
    assert folders.counts["red_disc"].unreadable == 1
    assert folders.counts["red_disc"].calibration + folders.counts["red_disc"].evaluation == 9
    used = {*folders.split.calibration, *(e.path for e in folders.split.evaluation)}
    assert broken not in used


def test_split_is_seeded_stratified_and_disjoint(images: Path):
    spec = PreprocessSpec(64, 56)
    first = data.folder_split(images, list(LABELS), spec, seed=7)
    again = data.folder_split(images, list(LABELS), spec, seed=7)
    other = data.folder_split(images, list(LABELS), spec, seed=8)

    assert first.split == again.split
    assert first.split.calibration != other.split.calibration
    evaluation = [e.path for e in first.split.evaluation]
    assert not set(evaluation) & set(first.split.calibration)
    for index, label in enumerate(LABELS):  # every class on both sides
        assert first.counts[label].calibration >= data.MIN_CALIBRATION_PER_CLASS
        assert first.counts[label].evaluation >= data.MIN_EVALUATION_PER_CLASS
        assert sum(1 for e in first.split.evaluation if e.accept == {index}) == (
            first.counts[label].evaluation
        )
    assert first.digest == again.digest


def test_data_digest_changes_with_a_class_name(tmp_path: Path, images: Path):
    root = shutil.copytree(images, tmp_path / "images")
    spec = PreprocessSpec(64, 56)
    before = data.folder_split(root, list(LABELS), spec).digest
    (root / "red_disc").rename(root / "crimson_disc")
    renamed = ["crimson_disc", *LABELS[1:]]

    assert data.folder_split(root, renamed, spec).digest != before


def test_data_dir_option_replaces_the_configs(
    project: Path, out: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    message = build_error(project, out, capsys, "--data-dir", str(tmp_path / "elsewhere"))
    assert message.endswith(f"[data] dir: folder {tmp_path / 'elsewhere'} does not exist")


def test_a_failure_removes_an_out_it_created(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    om.labels_file(project / "labels.txt", LABELS[:4])
    shutil.rmtree(project / "images" / "purple_cross")
    fresh = tmp_path / "new-artifacts"
    code = main(["--config", str(project / "model.toml"), "--out", str(fresh), "-q"])

    assert code == 2
    assert "has a 5-class head" in capsys.readouterr().err
    assert not fresh.exists()


def test_data_error_is_a_build_error():
    assert DataError("x").exit_code == 2
