"""The browser as an edge target: a static folder that runs the exported graphs with onnxruntime-web.

``python cli.py export --web DIR`` calls :func:`build_web_bundle` on an export folder. The bundle
works from any plain web server with no network access:

- ``index.html``, ``app.js``, ``anychannel.js``, ``style.css``: the page, copied from
  ``export/web_template/``. ``anychannel.js`` reproduces ``runtime/``'s preprocessing bit for bit
  (Pillow's resize, channel selection and normalisation by channel identity);
- ``manifest.json`` and the graphs it lists (fp32; int8 too when asked), each checked against its
  sha256 here and again by the page (WebCrypto) before use;
- ``ort/``: onnxruntime-web's loader scripts, Emscripten glue and WebAssembly binaries, copied from
  the npm package pinned in ``web/package.json`` (``npm ci --prefix web``);
- ``selftest/``: small PNGs, the pixels Pillow resizes them to, and the logits ``runtime.Classifier``
  gives for each bundled graph; ``index.html#selftest`` compares the page's results with them
  (``python -m export.webcheck DIR`` runs it in headless Chromium);
- ``probe/``: one tiny image per format tagged EXIF orientation 6, to learn which formats the
  browser turns upright (Pillow never does), so the page can undo it;
- ``web.json``: what the bundle holds, with every file's size and sha256.

It is written next to ``DIR`` and renamed into place, so ``DIR`` is never half-built.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime import contract
from runtime.artifacts import Artifacts, load_artifacts, read_verified
from runtime.channels import ChannelConfig, parse_channel_list
from runtime.errors import ArtifactError
from runtime.preprocess import INTERPOLATION, RESIZE_MODE, load_rgb, open_image, to_rgb

from .atomic import ensure_writable_dir, temp_path_for, write_synced
from .errors import ExportError, OutputDirError
from .metadata import project_version

ROOT = Path(__file__).resolve().parents[1]
#: The page's static sources, copied as they are.
TEMPLATE_DIR = Path(__file__).with_name("web_template")
TEMPLATE_FILES = ("index.html", "app.js", "anychannel.js", "style.css")
#: Where ``npm ci --prefix web`` puts onnxruntime-web; ``ANYCHANNEL_ORT_WEB_DIST`` overrides it.
NPM_PREFIX = ROOT / "web"
ORT_DIST = NPM_PREFIX / "node_modules" / "onnxruntime-web" / "dist"
ORT_DIST_ENV = "ANYCHANNEL_ORT_WEB_DIST"
#: Per backend: the script that defines ``ort``, then the Emscripten glue and binary it loads
#: (``ort.webgpu.min.js`` runs WebAssembly too, but its binary is twice the size).
ORT_BACKENDS: dict[str, tuple[str, ...]] = {
    "wasm": ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": ("ort.webgpu.min.js", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
}
ORT_FOLDER = "ort"
BUNDLE_INFO = "web.json"
BUNDLE_FORMAT = 1
SELFTEST_FOLDER = "selftest"
SELFTEST_CASES = f"{SELFTEST_FOLDER}/cases.json"
PROBE_FOLDER = "probe"
#: The page's logits must be within this of runtime.Classifier's, with the same top-1.
TOLERANCE = 1e-4
#: Wanted gap between a reference's two largest logits, so that a top-1 check cannot flip on noise.
MIN_MARGIN = 10 * TOLERANCE
#: Pillow 13 runs the vertical resampling pass first when the height shrinks by more than twice
#: what the width does (python-pillow/Pillow#9549); older versions always start horizontally.
PILLOW_VERTICAL_FIRST_SINCE = 13

_ORT_NOTICE = """onnxruntime-web {version}, copied from the npm package (web/package.json, `npm ci --prefix web`).

MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


class WebBundleError(ExportError):
    """The browser bundle cannot be built from what is there; nothing was written to its folder."""


class OrtWebMissingError(WebBundleError):
    """onnxruntime-web's files are not installed (``npm ci --prefix web``)."""


@dataclass
class WebBundle:
    """A built bundle: its folder, the graphs it runs and its files (relative path -> bytes)."""

    path: Path
    graphs: list[tuple[str, str]]
    files: dict[str, int] = field(default_factory=dict)
    onnxruntime_web: str = ""

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def summary(self) -> str:
        """Where the bundle is, what it holds, and how to serve and open it."""
        return (f"web bundle in {self.path}: {len(self.graphs)} graph(s), {len(self.files)} files, "
                f"{self.size / 2**20:.1f} MiB; serve it with `python -m http.server -d {self.path}` and "
                "open http://localhost:8000/ (#selftest checks it against the Python runtime)")


# --- onnxruntime-web ----------------------------------------------------------------------------


def ort_dist_dir(ort_dist: "str | os.PathLike[str] | None" = None) -> Path:
    """onnxruntime-web's ``dist`` folder: ``ort_dist``, else ``$ANYCHANNEL_ORT_WEB_DIST``, else web/node_modules."""
    if ort_dist is not None:
        return Path(ort_dist)
    return Path(os.environ[ORT_DIST_ENV]) if os.environ.get(ORT_DIST_ENV) else ORT_DIST


def ort_web_version(dist: Path) -> str:
    """The version in the package.json beside ``dist``, or ``unknown``."""
    try:
        return str(json.loads((dist.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def ort_files(dist: Path, backends: tuple[str, ...]) -> list[Path]:
    """The files the page needs for ``backends``, checked to be there before any other work."""
    wanted = [dist / name for backend in backends for name in ORT_BACKENDS[backend]]
    missing = [p.name for p in wanted if not p.is_file()]
    if missing:
        raise OrtWebMissingError(
            f"onnxruntime-web's files are missing from {dist} ({', '.join(missing)}); install the npm package "
            f"pinned in web/package.json with `npm ci --prefix web` (scripts/setup.sh does this), or point "
            f"${ORT_DIST_ENV} at an onnxruntime-web dist folder")
    return wanted


# --- self-test fixtures ---------------------------------------------------------------------------


def _fixture_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth colour field with mild noise: natural-image-like, so top-1 margins are not ties."""
    coarse = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8), "RGB")
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-6, 7, smooth.shape, dtype=np.int16)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def fixture_shapes(size: int) -> list[tuple[int, int, str, int]]:
    """(width, height, what it exercises, EXIF orientation) of the self-test images for a ``size`` px model."""
    return [
        (2 * size + 7, size + size // 2 + 1, "wide: both sides shrink, the sides are cropped", 1),
        (max(1, size - size // 4), 2 * size - 1, "tall: width grows, height shrinks and is cropped", 1),
        (size, size, "the model's size: no resizing", 1),
        (size + size // 2 + 1, max(1, size - 2), "EXIF orientation 6: the page undoes the browser's quarter turn", 6),
    ]


def _save_png(path: Path, pixels: np.ndarray, orientation: int = 1) -> None:
    """Save RGB ``pixels`` as a PNG, tagged with an EXIF ``orientation`` other than 1."""
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation  # Pillow (and so the runtime) ignores it; browsers turn the image
    Image.fromarray(pixels, "RGB").save(path, optimize=True, exif=exif)


def _write_probes(staging: Path) -> dict[str, str]:
    """A 2 x 1 image tagged EXIF orientation 6 per format: the page decodes each to learn which
    formats the browser turns (it draws them 1 x 2), and undoes only those turns."""
    folder = staging / PROBE_FOLDER
    folder.mkdir()
    pixels = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    probes = {}
    formats = (("jpeg", "jpg", {"quality": 95}), ("png", "png", {}), ("webp", "webp", {"lossless": True}))
    for fmt, suffix, options in formats:
        name = f"orientation-6.{suffix}"
        try:
            pixels.save(folder / name, exif=exif, **options)
        except (OSError, KeyError):  # a Pillow built without WebP
            continue
        probes[fmt] = f"{PROBE_FOLDER}/{name}"
    return probes


def _margin(logits: np.ndarray) -> float:
    """Smallest gap between the two largest logits over a batch."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    return float((top2[:, 1] - top2[:, 0]).min())


def _write_selftest(staging: Path, graphs: list[tuple[ChannelConfig, str]], size: int,
                    attempts: int = 20) -> dict[str, Any]:
    """Write the self-test images and their references into ``staging``; return ``cases.json``'s content.

    The references come from ``runtime.Classifier`` on the shipped PNG files (decode, resize,
    normalise, run: the whole Python path), on the bundle's own manifest and graph copies.
    """
    from runtime.classifier import Classifier

    folder = staging / SELFTEST_FOLDER
    folder.mkdir()
    classifiers = {p: Classifier(staging, device="cpu", precision=p) for p in {p for _, p in graphs}}
    rng = np.random.default_rng(0)
    images, logits = [], {g: [] for g in graphs}
    for i, (width, height, note, orientation) in enumerate(fixture_shapes(size)):
        path = folder / f"case-{i}.png"
        best = None
        for _ in range(attempts):  # keep the first image whose top-1 is clear in every graph
            _save_png(path, _fixture_image(rng, width, height), orientation)
            found = {g: classifiers[g[1]].predict_logits(str(path), g[0])[0] for g in graphs}
            margin = min(_margin(v[None]) for v in found.values())
            if best is None or margin > best[0]:
                best = (margin, path.read_bytes(), found)
            if margin >= MIN_MARGIN:
                break
        margin, png, found = best
        path.write_bytes(png)
        resized = load_rgb(path, size)  # the pixels runtime.preprocess gives: the page must match them
        (folder / f"case-{i}.rgb").write_bytes(np.ascontiguousarray(resized).tobytes())
        images.append({"file": f"{SELFTEST_FOLDER}/{path.name}", "width": width, "height": height,
                       "exif_orientation": orientation, "resized": f"{SELFTEST_FOLDER}/case-{i}.rgb",
                       "what": note, "top1_margin": round(margin, 6)})
        for g in graphs:
            logits[g].append(found[g])
    # Not part of the pass mark: whether this browser's JPEG decoder gives Pillow's pixels.
    width, height = fixture_shapes(size)[0][:2]
    jpeg = folder / "decode-0.jpg"
    Image.fromarray(_fixture_image(rng, width, height), "RGB").save(jpeg, quality=90)
    (folder / "decode-0.rgb").write_bytes(np.ascontiguousarray(to_rgb(open_image(jpeg))).tobytes())
    decode_checks = [{"file": f"{SELFTEST_FOLDER}/{jpeg.name}", "decoded": f"{SELFTEST_FOLDER}/decode-0.rgb",
                      "width": width, "height": height,
                      "what": "JPEG, quality 90, 4:2:0: the browser's decoder against Pillow's"}]
    import onnxruntime

    return {
        "tolerance": TOLERANCE,
        "reference": f"runtime.Classifier(device='cpu') on the PNG files, onnxruntime {onnxruntime.__version__} "
                     f"(CPUExecutionProvider), Pillow {Image.__version__}",
        "images": images,
        "decode_checks": decode_checks,
        "graphs": [{"channels": c.name, "precision": p,
                    "logits": [[float(v) for v in row] for row in logits[(c, p)]],
                    "top1": [int(np.argmax(row)) for row in logits[(c, p)]]} for c, p in graphs],
    }


# --- the bundle -----------------------------------------------------------------------------------


def _check_destination(out: Path) -> None:
    """``out`` may be new, empty, or an earlier bundle (replaced); anything else is refused, not deleted."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"web bundle folder {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / BUNDLE_INFO).is_file():
        raise OutputDirError(f"web bundle folder {out} exists and is not a web bundle (no {BUNDLE_INFO}); "
                             "choose a new or empty folder")
    ensure_writable_dir(out.parent)


def _install(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder to ``out``, replacing an earlier bundle there."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = temp_path_for(out)
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(old, out)  # put the earlier bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _selected_graphs(artifacts: Artifacts, channels: str, int8: bool,
                     export_dir: Path) -> tuple[list[ChannelConfig], list[tuple[ChannelConfig, str]]]:
    """The configurations to bundle and their (configuration, precision) graphs: fp32, then int8 if asked."""
    configs = artifacts.configs if channels.strip().lower() == "all" else parse_channel_list(channels)
    missing = [c.name for c in configs if c.name not in artifacts.graphs]
    if missing:
        raise WebBundleError(f"{export_dir} has no graph for {', '.join(missing)} (exported: "
                             f"{', '.join(artifacts.graphs)}); export it first")
    graphs = [(c, "fp32") for c in configs]
    if int8:
        try:
            quantised = load_artifacts(export_dir, "int8").graphs
        except ArtifactError:
            quantised = {}
        lacking = [c.name for c in configs if c.name not in quantised]
        if lacking:
            raise WebBundleError(f"{export_dir} has no int8 graph for {', '.join(lacking)}; export them with "
                                 "`python cli.py export --int8`")
        graphs += [(c, "int8") for c in configs]
    return configs, graphs


def _bundle_manifest(artifacts: Artifacts, configs: list[ChannelConfig], int8: bool) -> dict[str, Any]:
    """The export's manifest, listing only what the bundle holds (so it vouches for no absent file)."""
    keep = {"int8"} if int8 else set()
    graphs = {}
    for config in configs:
        entry = dict(artifacts.manifest[contract.MANIFEST_GRAPHS][config.name])
        for precision in contract.VARIANT_PRECISIONS:
            if precision not in keep:
                entry.pop(precision, None)
        graphs[config.name] = entry
    return {**artifacts.manifest, contract.MANIFEST_GRAPHS: graphs}


def build_web_bundle(export_dir: "str | os.PathLike[str]", out: "str | os.PathLike[str]", *,
                     channels: str = "all", int8: bool = False, webgpu: bool = True,
                     ort_dist: "str | os.PathLike[str] | None" = None) -> WebBundle:
    """Build the browser bundle for the graphs in ``export_dir`` (a folder or its manifest) into ``out``.

    Args:
        channels: ``"all"`` (every graph of the export) or a list such as ``"RGB,R"``.
        int8: also bundle each configuration's int8 graph (the export must have them: ``--int8``).
        webgpu: also ship onnxruntime-web's WebGPU build (about 29 MB), used when the page is asked
            for it and the browser has WebGPU.
        ort_dist: onnxruntime-web's ``dist`` folder (default: see :func:`ort_dist_dir`).

    Raises:
        OrtWebMissingError: onnxruntime-web is not installed (``npm ci --prefix web``).
        WebBundleError: a requested graph or its int8 variant is not in the export.
        OutputDirError: ``out`` is a file, or a non-empty folder that is not an earlier bundle.
        ArtifactError: the export's manifest is missing or malformed, or a graph fails its checksum.
    """
    artifacts = load_artifacts(export_dir)
    export_dir = artifacts.root
    configs, graphs = _selected_graphs(artifacts, channels, int8, export_dir)
    dist = ort_dist_dir(ort_dist)
    backends = ("wasm", "webgpu") if webgpu else ("wasm",)
    ort_paths = ort_files(dist, backends)  # before any slow work
    out = Path(out)
    _check_destination(out)
    if out.resolve() == export_dir.resolve():
        raise OutputDirError(f"the web bundle cannot replace the export folder {out}; choose another folder")

    staging = temp_path_for(out)
    staging.mkdir()
    try:
        variants = {"fp32": artifacts}
        if int8:
            variants["int8"] = load_artifacts(export_dir, "int8")
        for config, precision in graphs:
            entry = variants[precision].entry(config)
            write_synced(staging / entry.path.name, read_verified(entry))  # only bytes that match the manifest
        write_synced(staging / contract.MANIFEST_NAME,
                     (json.dumps(_bundle_manifest(artifacts, configs, int8), indent=2) + "\n").encode())
        (staging / ORT_FOLDER).mkdir()
        for path in ort_paths:
            shutil.copyfile(path, staging / ORT_FOLDER / path.name)
        version = ort_web_version(dist)
        (staging / ORT_FOLDER / "LICENSE.txt").write_text(_ORT_NOTICE.format(version=version))
        for name in TEMPLATE_FILES:
            shutil.copyfile(TEMPLATE_DIR / name, staging / name)
        probes = _write_probes(staging)
        cases = _write_selftest(staging, graphs, artifacts.image_size)
        (staging / SELFTEST_CASES).write_text(json.dumps(cases) + "\n")
        files = {p.relative_to(staging).as_posix(): p for p in sorted(staging.rglob("*")) if p.is_file()}
        pillow_major = int(Image.__version__.split(".")[0])
        info = {
            "format": BUNDLE_FORMAT,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "anychannel_version": project_version(),
            "task": artifacts.task,
            "model": artifacts.model,
            "image_size": artifacts.image_size,
            "class_names": list(artifacts.class_names),
            "graphs": [{"channels": c.name, "precision": p} for c, p in graphs],
            "precisions": ["fp32", "int8"] if int8 else ["fp32"],
            "onnxruntime_web": {
                "version": version,
                "wasm_paths": f"{ORT_FOLDER}/",
                "backends": {b: {"script": f"{ORT_FOLDER}/{ORT_BACKENDS[b][0]}"} for b in backends},
            },
            "preprocess": {"resize": RESIZE_MODE, "interpolation": INTERPOLATION, "pillow": Image.__version__,
                           "pillow_vertical_first": pillow_major >= PILLOW_VERTICAL_FIRST_SINCE},
            "orientation_probes": probes,
            "selftest": {"cases": SELFTEST_CASES, "tolerance": TOLERANCE},
            "files": {name: {"size": p.stat().st_size, "sha256": contract.sha256_file(p)} for name, p in files.items()},
        }
        write_synced(staging / BUNDLE_INFO, (json.dumps(info, indent=2) + "\n").encode())
        sizes = {name: p.stat().st_size for name, p in files.items()}
        sizes[BUNDLE_INFO] = (staging / BUNDLE_INFO).stat().st_size
        _install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WebBundle(out, [(c.name, p) for c, p in graphs], dict(sorted(sizes.items())), version)


def up_to_date_export(task: str, channels: str, model: str | None, checkpoint: "Path | None",
                      out: "Path | None", int8: bool, root: Path | None = None) -> Path | None:
    """The existing export folder ``export --web`` can bundle as it is, or None when it must export first.

    Reused when no ``--checkpoint`` is named, the folder (``--out`` or the default) holds intact graphs
    for the requested channels (int8 variants too with ``--int8``), and no checkpoint they would be
    exported from is newer than the manifest.
    """
    from .pipeline import ARTIFACTS, default_checkpoint, default_model, default_out_dir, is_default_family

    if checkpoint is not None:
        return None
    root = ARTIFACTS if root is None else root
    name = model or default_model(task)
    folder = Path(out) if out is not None else default_out_dir(task, name, root)
    manifest = folder / contract.MANIFEST_NAME
    try:
        artifacts = load_artifacts(folder)
        configs, graphs = _selected_graphs(artifacts, channels, int8, folder)
        variants = {"fp32": artifacts, "int8": load_artifacts(folder, "int8") if int8 else None}
        for config, precision in graphs:
            read_verified(variants[precision].entry(config))
    except (ArtifactError, WebBundleError):
        return None
    # The graphs must be those export would write there: this task's, and the asked-for model's.
    if artifacts.task != task or not (artifacts.model == model if model else is_default_family(task, artifacts.model)):
        return None
    sources = [default_checkpoint(task, name, c, root) for c in configs]
    newest = max((p.stat().st_mtime for p in sources if p.is_file()), default=None)
    if newest is not None and newest > manifest.stat().st_mtime:
        return None
    return folder


def files_table(bundle: WebBundle) -> str:
    """The bundle's files and sizes as a markdown table (docs/web.md lists one)."""
    rows = ["| file | size |", "|---|---:|"]
    for name, size in bundle.files.items():
        rows.append(f"| `{name}` | {_human(size)} |")
    rows.append(f"| **total** | **{_human(bundle.size)}** |")
    return "\n".join(rows)


def _human(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.1f} KiB"
    return f"{size} B"
