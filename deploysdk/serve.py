"""A small HTTP service around one ``Pipeline``: upload a NIfTI file or a zip of DICOM files, get the report back and
fetch the mask. Standard library only (``http.server.ThreadingHTTPServer``), no torch.

    deploysdk serve liver.onnx --port 8000
    curl -X POST --data-binary @ct.nii.gz -H 'Content-Type: application/octet-stream' \
         'http://127.0.0.1:8000/v1/segment?filename=ct.nii.gz'
    curl -X POST --data-binary @study.zip -H 'Content-Type: application/zip' http://127.0.0.1:8000/v1/segment

Endpoints:
  POST /v1/segment                      body: the file; Content-Type application/zip (DICOM files, any folders) or
                                        application/octet-stream with a file name (``?filename=``, ``X-Filename`` or
                                        Content-Disposition) or recognisable bytes (zip/NIfTI/gzip signature)
                                        -> 200 {"id", "urls", "labels", "report"}
  GET  /v1/results/<id>/<file>          mask.nii.gz, report.json, overlay.png, seg.dcm
  GET  /healthz                         {"status": "ok"}
  GET  /v1/model                        model name, checksum, backend, inputs/outputs, preprocessing, tiling

Errors are JSON ``{"error": "...", "status": N}``: 400 bad content (corrupt zip, unusable series: ``problems``
lists every file with its reason), 404, 405, 411 no Content-Length, 413 upload over ``max_upload_mb`` (refused
before reading the body), 415 not a NIfTI/zip upload, 500 unexpected. Zips are extracted member by member into a
private temp folder: absolute paths, ``..``, drive letters and symlinks are refused (zip slip), as are archives over
``max_zip_files`` members or ``max_unpacked_mb`` unpacked (zip bombs). Results live in ``results_dir`` (a temp
folder by default); the oldest are deleted beyond ``max_results``. At most ``max_concurrent`` studies run at once.
"""
from __future__ import annotations

import collections
import http.server
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
import zipfile
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import DeploySDKError, SeriesError

__all__ = ["ServeConfig", "SegmentService", "make_server", "serve", "safe_extract", "HTTPError"]

log = logging.getLogger(__name__)
RESULT_FILES = {"mask.nii.gz": "application/gzip", "report.json": "application/json", "overlay.png": "image/png",
                "seg.dcm": "application/dicom", "probabilities.nii.gz": "application/gzip"}
UPLOAD_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream", "application/gzip",
                "application/x-gzip", "application/x-nifti", "application/nifti")
_ID = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1 << 20
_DRAIN_MAX = 64 << 20  # refused uploads up to this size are read and dropped


class HTTPError(Exception):
    """An error answered with ``status`` and a JSON body ``{"error": message, ...extra}``."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the service (see the module docstring)."""

    max_upload_mb: float = 512.0
    max_results: int = 100
    results_dir: str | None = None
    max_concurrent: int = 2
    max_zip_files: int = 20000
    max_unpacked_mb: float = 4096.0

    def __post_init__(self):
        if not self.max_upload_mb > 0 or not self.max_unpacked_mb > 0:
            raise ValueError(f"max_upload_mb and max_unpacked_mb must be > 0, got {self.max_upload_mb} and "
                             f"{self.max_unpacked_mb}")
        for name in ("max_results", "max_concurrent", "max_zip_files"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# --- uploads ------------------------------------------------------------------------------------------------------
def safe_extract(zip_path: str, dest: str, *, max_files: int, max_bytes: int) -> int:
    """Extract regular files of ``zip_path`` under ``dest``; refuse paths that would land elsewhere, symlinks, and
    archives over the limits (counted on the bytes actually inflated). Returns the number of files."""
    root = os.path.realpath(dest)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > max_files:
                raise HTTPError(400, f"the zip holds {len(members)} files; at most {max_files} are accepted")
            if sum(m.file_size for m in members) > max_bytes:
                raise HTTPError(400, f"the zip unpacks to more than {max_bytes} bytes, the limit")
            written = 0
            for m in members:
                target = _member_target(m, root)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as dst:
                    while block := src.read(_CHUNK):
                        written += len(block)
                        if written > max_bytes:
                            raise HTTPError(400, f"the zip unpacks to more than {max_bytes} bytes, the limit")
                        dst.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, RuntimeError) as e:
        raise HTTPError(400, f"the upload is not a readable zip archive: {e}") from None
    return len(members)


def _member_target(member: zipfile.ZipInfo, root: str) -> str:
    name = member.filename.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts or not parts:
        raise HTTPError(400, f"unsafe path in the zip: {member.filename!r} (absolute or leaving the archive)")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise HTTPError(400, f"the zip holds a symbolic link, which is refused: {member.filename!r}")
    target = os.path.realpath(os.path.join(root, *parts))
    if not target.startswith(root + os.sep):
        raise HTTPError(400, f"unsafe path in the zip: {member.filename!r}")
    return target


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "nifti.gz"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00"):
        return "nifti"
    return None


def _upload_kind(content_type: str, filename: str, head: bytes) -> str:
    """"zip" | "nifti" | "nifti.gz" from the declared type, the file name and the first bytes."""
    if content_type not in UPLOAD_TYPES:
        raise HTTPError(415, f"Content-Type {content_type or '(none)'!r} is not accepted: send a NIfTI file or a zip "
                             f"of DICOM files as application/zip or application/octet-stream")
    low, sniffed = filename.lower(), _sniff(head)
    if content_type in ("application/zip", "application/x-zip-compressed") or low.endswith(".zip"):
        kind = "zip"
    elif low.endswith(".nii.gz") or low.endswith(".nii"):
        kind = "nifti.gz" if sniffed == "nifti.gz" else "nifti"
    elif low:
        raise HTTPError(415, f"file {filename!r} is neither NIfTI (.nii, .nii.gz) nor a zip of DICOM files")
    elif sniffed is None:
        raise HTTPError(415, "cannot tell what the upload is: name it (?filename=x.nii.gz, X-Filename) or send a "
                             "NIfTI file or a zip of DICOM files")
    else:
        kind = sniffed
    if kind == "zip" and sniffed != "zip":
        raise HTTPError(400, "the upload is declared a zip but does not start with a zip signature")
    return kind


# --- the service ----------------------------------------------------------------------------------------------
class SegmentService:
    """What the handler threads share: the pipeline, the results folder and a bounded index of results."""

    def __init__(self, pipeline, config: ServeConfig | None = None):
        self.pipeline, self.config = pipeline, config or ServeConfig()
        self.own_root = self.config.results_dir is None
        self.root = tempfile.mkdtemp(prefix="deploysdk-serve-") if self.own_root else self.config.results_dir
        os.makedirs(self.root, exist_ok=True)
        self._lock = threading.Lock()
        self._results: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._slots = threading.BoundedSemaphore(int(self.config.max_concurrent))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.config.max_upload_mb * 1024 * 1024)

    def model_info(self) -> dict:
        p = self.pipeline
        rt = p.runtime
        return {**p.model.to_dict(), "path": os.path.basename(p.model.path),
                "inputs": [s.describe() for s in rt.inputs], "outputs": [s.describe() for s in rt.outputs],
                "tile": None if p.tile is None else {"roi_size": p.tile.roi_size, "overlap": p.tile.overlap,
                                                     "blend": p.tile.blend},
                "metadata": {k: v for k, v in rt.metadata.items() if k.startswith("sdk.")}}

    def segment(self, upload_path: str, kind: str, work: str) -> dict:
        """Run the pipeline on a saved upload; returns the JSON answer. ``work``: a private temp folder."""
        if kind == "zip":
            source = os.path.join(work, "study")
            os.makedirs(source)
            count = safe_extract(upload_path, source, max_files=int(self.config.max_zip_files),
                                 max_bytes=int(self.config.max_unpacked_mb * 1024 * 1024))
            if count == 0:
                raise HTTPError(400, "the zip holds no files")
        else:
            source = os.path.join(work, "upload.nii.gz" if kind == "nifti.gz" else "upload.nii")
            os.replace(upload_path, source)
        rid = uuid.uuid4().hex
        folder = os.path.join(self.root, rid)
        with self._slots:
            result = self.pipeline(source, output_dir=folder)
        self._register(rid, folder)
        urls = {k: f"/v1/results/{rid}/{os.path.basename(p)}" for k, p in result.outputs.items()}
        report = result.report()
        report["input"]["source"] = "upload.zip" if kind == "zip" else "upload"  # no server paths in answers
        report["inputs"] = {"used": [os.path.relpath(p, source) if kind == "zip" else "upload" for p in
                                     report["inputs"]["used"]],
                            "skipped": [{"path": os.path.relpath(s["path"], source) if kind == "zip" else "upload",
                                         "reason": s["reason"].replace(source + os.sep, "")}
                                        for s in report["inputs"]["skipped"]]}
        report["model"]["path"] = os.path.basename(report["model"]["path"])
        return {"id": rid, "urls": urls, "labels": result.volumes, "report": report}

    def _register(self, rid: str, folder: str) -> None:
        with self._lock:
            self._results[rid] = folder
            while len(self._results) > int(self.config.max_results):
                _, old = self._results.popitem(last=False)
                shutil.rmtree(old, ignore_errors=True)

    def result_file(self, rid: str, name: str) -> str:
        with self._lock:
            folder = self._results.get(rid) if _ID.match(rid) else None
        path = os.path.join(folder, name) if folder and name in RESULT_FILES else None
        if path is None or not os.path.isfile(path):
            raise HTTPError(404, f"no result file {name!r} for id {rid!r} (results are kept for the last "
                                 f"{self.config.max_results} studies)")
        return path

    def close(self) -> None:
        if self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)


# --- HTTP -----------------------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "deploysdk-serve/1"

    @property
    def service(self) -> SegmentService:
        return self.server.service

    def log_message(self, fmt, *args):  # through logging, not raw stderr
        log.info("%s %s", self.address_string(), fmt % args)

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guard(self, fn) -> None:
        try:
            fn()
        except HTTPError as e:
            self._send_json(e.status, {"error": e.message, "status": e.status, **e.extra})
        except SeriesError as e:
            self._send_json(400, {"error": e.message, "status": 400,
                                  "problems": [{"path": os.path.basename(p), "reason": r} for p, r in e.problems]})
        except (DeploySDKError, ValueError) as e:
            self._send_json(400, {"error": str(e).split("\n")[0], "status": 400})
        except Exception as e:  # a bug or a resource problem: answered, logged, and the server keeps serving
            log.exception("request %s %s failed", self.command, self.path)
            self._send_json(500, {"error": f"internal error: {type(e).__name__}: {e}", "status": 500})

    def do_GET(self):
        self._guard(self._get)

    def do_POST(self):
        self._guard(self._post)

    def do_PUT(self):
        self._guard(lambda: self._not_allowed())

    do_DELETE = do_PATCH = do_PUT

    def _not_allowed(self):
        raise HTTPError(405, f"{self.command} is not allowed on {urlsplit(self.path).path}")

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            return self._send_json(200, {"status": "ok", "model": self.service.pipeline.model.name})
        if path == "/v1/model":
            return self._send_json(200, self.service.model_info())
        m = re.fullmatch(r"/v1/results/([^/]+)/([^/]+)", path)
        if m:
            return self._send_file(self.service.result_file(m.group(1), unquote(m.group(2))))
        if path == "/v1/segment":
            self._not_allowed()
        raise HTTPError(404, f"no endpoint {path}; see /healthz, /v1/model, POST /v1/segment")

    def _send_file(self, path: str) -> None:
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Type", RESULT_FILES[os.path.basename(path)])
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile, _CHUNK)

    def _filename(self, query: dict) -> str:
        name = (query.get("filename") or [""])[0] or self.headers.get("X-Filename", "")
        if not name:
            m = re.search(r'filename="?([^";]+)"?', self.headers.get("Content-Disposition", ""))
            name = m.group(1) if m else ""
        return os.path.basename(name.replace("\\", "/"))

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/v1/segment":
            if url.path in ("/healthz", "/v1/model") or url.path.startswith("/v1/results/"):
                self._not_allowed()
            raise HTTPError(404, f"no endpoint {url.path}; POST to /v1/segment")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise HTTPError(411, "a Content-Length header is required (chunked uploads are not accepted)")
        length, limit = int(length), self.service.max_upload_bytes
        if length > limit:
            self._discard(length)
            raise HTTPError(413, f"upload of {length} bytes exceeds the limit of {limit} bytes "
                                 f"({self.service.config.max_upload_mb:g} MiB; --max-upload-mb)")
        if length == 0:
            raise HTTPError(400, "empty upload: send a NIfTI file or a zip of DICOM files")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        with tempfile.TemporaryDirectory(prefix="deploysdk-upload-") as work:
            upload = os.path.join(work, "upload.bin")
            head = self._receive(upload, length)
            kind = _upload_kind(content_type, self._filename(parse_qs(url.query)), head)
            answer = self.service.segment(upload, kind, work)
        self._send_json(200, answer)

    def _discard(self, length: int) -> None:
        """Read a refused body of moderate size (so the client, still sending, sees the answer rather than a reset);
        a larger one is left unread and the connection closed."""
        self.close_connection = True
        if length <= _DRAIN_MAX:
            while length > 0 and (block := self.rfile.read(min(_CHUNK, length))):
                length -= len(block)

    def _receive(self, path: str, length: int) -> bytes:
        """Stream the body to ``path``; returns its first bytes (for sniffing)."""
        head, left = b"", length
        with open(path, "wb") as f:
            while left > 0:
                block = self.rfile.read(min(_CHUNK, left))
                if not block:
                    raise HTTPError(400, f"the upload ended after {length - left} of {length} bytes")
                head = head or block[:512]
                f.write(block)
                left -= len(block)
        return head


def make_server(pipeline, host: str = "127.0.0.1", port: int = 8000,
                config: ServeConfig | None = None) -> http.server.ThreadingHTTPServer:
    """A ready server (not yet serving; ``port=0`` picks a free port: ``server.server_address[1]``); its
    ``service`` attribute holds the results. Call ``serve_forever()``, then ``shutdown()``/``server_close()``."""
    server = http.server.ThreadingHTTPServer((host, int(port)), _Handler)
    server.daemon_threads = True
    server.service = SegmentService(pipeline, config)
    return server


def serve(model, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 512.0,
          backend: str = "auto", device: str = "cpu", results_dir: str | None = None, max_results: int = 100,
          max_concurrent: int = 2, **pipeline_kwargs) -> None:
    """Open ``model`` in a ``Pipeline`` and serve it until interrupted (Ctrl-C)."""
    from .pipeline import Pipeline

    config = ServeConfig(max_upload_mb=max_upload_mb, max_results=max_results, results_dir=results_dir,
                         max_concurrent=max_concurrent)
    with Pipeline.from_model(model, backend=backend, device=device, **pipeline_kwargs) as pipe:
        server = make_server(pipe, host, port, config)
        print(f"serving {pipe.describe()} on http://{host}:{server.server_address[1]} "
              f"(POST /v1/segment; results in {server.service.root})", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            server.service.close()
