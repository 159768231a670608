"""Packaging: the manifest napari loads is the root napari.yaml, npe2 validates, data ships in the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_napari_loads_is_the_root_file():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-dpfocus")
    import dpfocus

    packaged = Path(dpfocus.__file__).parent / "napari.yaml"
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()
    assert {s.key for s in manifest.contributions.sample_data} >= {"garden", "workshop", "gallery"}
    assert manifest.contributions.readers and manifest.contributions.writers


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).parent / "npe2"
    proc = subprocess.run([str(npe2), "validate", "napari-dpfocus"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in (proc.stdout + proc.stderr).lower()


def test_wheel_ships_manifest_and_samples(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("napari_dpfocus-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "dpfocus/napari.yaml" in names
    for sample in ("garden", "workshop", "gallery", "microscope"):
        assert f"dpfocus/sample_data/{sample}/{sample}_L.png" in names
        assert f"dpfocus/sample_data/{sample}/{sample}_disparity.tif" in names
    assert "dpfocus/nn/configs/tiny.json" in names and "dpfocus/nn/configs/small.json" in names
    if (ROOT / "src/dpfocus/nn/weights/dpkernelnet.pt").is_file():
        assert "dpfocus/nn/weights/dpkernelnet.pt" in names
    text = zipfile.ZipFile(wheel).read("dpfocus/napari.yaml").decode()
    assert text == (ROOT / "napari.yaml").read_text()
    entry = [n for n in names if n.endswith("entry_points.txt")][0]
    assert "dpfocus:napari.yaml" in zipfile.ZipFile(wheel).read(entry).decode()
