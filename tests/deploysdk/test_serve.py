"""``deploysdk serve`` over real HTTP on loopback (port 0): NIfTI and DICOM-zip uploads, result files, limits,
content checks, zip-slip refusal, the results cap, and the command line."""
import gzip
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest

from deploysdk.io import read_nifti, write_dicom_series, write_nifti
from deploysdk.pipeline import Pipeline, Preprocessing
from deploysdk.serve import ServeConfig, make_server

from .pipeline._models import threshold_model

SPEC = Preprocessing(intensity="window", window=(50.0, 100.0), labels={1: "sphere"})


def _sphere_hu():
    z, y, x = np.mgrid[:10, :24, :20]
    return np.where((z - 4.5) ** 2 * 4 + (y - 11) ** 2 + (x - 9) ** 2 < 49, 100.0, -1000.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    hu = _sphere_hu()
    affine = np.array([[0.8, 0, 0, -5], [0, 0.8, 0, 7], [0, 0, 2.5, 30], [0, 0, 0, 1]], float)
    nifti = write_nifti(hu.astype(np.float32), affine, str(d / "ct.nii.gz"))
    series = write_dicom_series(hu, d / "dcm", spacing=(2.5, 0.8, 0.8), series_description="sphere")
    (d / "dcm" / "readme.txt").write_text("not DICOM")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(os.listdir(d / "dcm")):
            zf.write(d / "dcm" / p, f"study/{p}")
    return {"model": threshold_model(d / "thr.onnx", 3, SPEC), "nifti": nifti, "affine": affine, "hu": hu,
            "zip": buf.getvalue(), "series": series}


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    pipe = Pipeline.from_model(files["model"])
    results = str(tmp_path_factory.mktemp("results"))
    srv = make_server(pipe, "127.0.0.1", 0, ServeConfig(max_upload_mb=0.5, max_results=3, results_dir=results))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    srv.shutdown()
    srv.server_close()
    pipe.close()


def _call(url, data=None, headers=None, method=None):
    """(status, body bytes, content type) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type")


def _json(url, *args, **kwargs):
    status, body, ctype = _call(url, *args, **kwargs)
    assert ctype == "application/json", (status, body[:200])
    return status, json.loads(body)


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:  # name: a str or a ZipInfo (to set attributes, e.g. a symlink)
            zf.writestr(name, data)
    return buf.getvalue()


def test_health_and_model(server):
    url, _ = server
    assert _json(url + "/healthz") == (200, {"status": "ok", "model": "threshold"})
    status, info = _json(url + "/v1/model")
    assert status == 200 and info["name"] == "threshold" and len(info["sha256"]) == 64
    assert info["preprocessing"]["window"] == [50.0, 100.0] and info["backend"] == "onnxruntime"
    assert info["inputs"][0].startswith("input") and info["tile"]["roi_size"] == [16, 16, 16]


def test_nifti_upload_and_result_files(server, files):
    url, _ = server
    with open(files["nifti"], "rb") as f:
        body = f.read()
    status, answer = _json(url + "/v1/segment?filename=ct.nii.gz", body,
                           {"Content-Type": "application/octet-stream"})
    assert status == 200, answer
    truth = files["hu"] > 50
    assert answer["labels"]["sphere"]["voxels"] == int(truth.sum())
    assert answer["labels"]["sphere"]["ml"] == pytest.approx(truth.sum() * 0.8 * 0.8 * 2.5 / 1000)
    assert answer["report"]["inputs"] == {"used": ["upload"], "skipped": []}
    status, mask, ctype = _call(url + answer["urls"]["mask"])
    assert status == 200 and ctype == "application/gzip" and mask[:2] == b"\x1f\x8b"
    path = os.path.join(os.path.dirname(files["nifti"]), "got_mask.nii.gz")
    with open(path, "wb") as f:
        f.write(mask)
    got = read_nifti(path, dtype=None)
    np.testing.assert_array_equal(got.array, truth)
    np.testing.assert_allclose(got.affine, files["affine"], atol=1e-5)
    status, report = _json(url + answer["urls"]["report"])
    assert status == 200 and report["labels"] == answer["labels"] and report["model"]["name"] == "threshold"
    # the type can come from the bytes alone: a gzip signature is a compressed NIfTI
    status, again = _json(url + "/v1/segment", body, {"Content-Type": "application/octet-stream"})
    assert status == 200 and again["labels"] == answer["labels"] and again["id"] != answer["id"]


def test_dicom_zip_upload_accounts_for_every_file(server, files):
    url, _ = server
    status, answer = _json(url + "/v1/segment", files["zip"], {"Content-Type": "application/zip"})
    assert status == 200, answer
    report = answer["report"]
    assert report["input"]["kind"] == "dicom-series" and report["input"]["source"] == "upload.zip"
    assert sorted(report["inputs"]["used"]) == sorted(f"study/{os.path.basename(p)}" for p in files["series"])
    assert [(s["path"], "not a DICOM file" in s["reason"]) for s in report["inputs"]["skipped"]] == \
        [("study/readme.txt", True)]
    assert answer["labels"]["sphere"]["voxels"] == int((files["hu"] > 50).sum())
    assert set(answer["urls"]) == {"mask", "overlay", "seg", "report"}
    status, png, ctype = _call(url + answer["urls"]["overlay"])
    assert status == 200 and ctype == "image/png" and png.startswith(b"\x89PNG")


def test_limits_and_bad_content(server):
    url, _ = server
    status, err = _json(url + "/v1/segment", b"\0" * 600_000, {"Content-Type": "application/octet-stream"})
    assert status == 413 and "exceeds the limit of 524288 bytes" in err["error"]
    status, err = _json(url + "/v1/segment", b"hello", {"Content-Type": "text/plain"})
    assert status == 415 and "Content-Type 'text/plain' is not accepted" in err["error"]
    status, err = _json(url + "/v1/segment", b"hello", {"Content-Type": "application/octet-stream"})
    assert status == 415 and "cannot tell what the upload is" in err["error"]
    status, err = _json(url + "/v1/segment?filename=x.png", b"\x89PNG", {"Content-Type": "application/octet-stream"})
    assert status == 415 and "neither NIfTI" in err["error"]
    status, err = _json(url + "/v1/segment", b"PK\x03\x04garbage", {"Content-Type": "application/zip"})
    assert status == 400 and "not a readable zip" in err["error"]
    status, err = _json(url + "/v1/segment?filename=x.nii.gz", gzip.compress(b"not nifti"),
                        {"Content-Type": "application/octet-stream"})
    assert status == 400 and "not a readable NIfTI" in err["error"]
    status, err = _json(url + "/v1/segment", _zip([("a/readme.txt", b"no dicom here")]),
                        {"Content-Type": "application/zip"})
    assert status == 400 and "no DICOM series found" in err["error"]
    assert err["problems"][0]["path"] == "readme.txt" and "not a DICOM file" in err["problems"][0]["reason"]


def test_zip_slip_and_symlinks_are_refused(server, tmp_path):
    url, srv = server
    status, err = _json(url + "/v1/segment", _zip([("../../evil.dcm", b"x")]), {"Content-Type": "application/zip"})
    assert status == 400 and "unsafe path in the zip: '../../evil.dcm'" in err["error"]
    status, err = _json(url + "/v1/segment", _zip([("/etc/evil.dcm", b"x")]), {"Content-Type": "application/zip"})
    assert status == 400 and "unsafe path" in err["error"]
    link = zipfile.ZipInfo("study/link.dcm")
    link.external_attr = (0o120777 << 16)  # a symlink entry
    status, err = _json(url + "/v1/segment", _zip([(link, "/etc/passwd")]), {"Content-Type": "application/zip"})
    assert status == 400 and "symbolic link" in err["error"]
    root = os.path.dirname(srv.service.root.rstrip(os.sep))
    assert not any(f == "evil.dcm" for _, _, fs in os.walk(root) for f in fs)


def test_protocol_errors(server):
    url, _ = server
    status, err = _json(url + "/v1/segment")
    assert status == 405 and "GET is not allowed" in err["error"]
    status, err = _json(url + "/v1/nothing")
    assert status == 404
    status, err = _json(url + "/v1/results/" + "0" * 32 + "/mask.nii.gz")
    assert status == 404 and "no result file" in err["error"]
    status, err = _json(url + "/v1/results/../../etc/passwd")
    assert status == 404
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/v1/segment")
    conn.putheader("Content-Type", "application/zip")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    conn.close()


def test_results_are_capped(files, tmp_path):
    pipe = Pipeline.from_model(files["model"])
    srv = make_server(pipe, "127.0.0.1", 0, ServeConfig(max_results=2, results_dir=str(tmp_path)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with open(files["nifti"], "rb") as f:
            body = f.read()
        ids = [_json(url + "/v1/segment?filename=a.nii.gz", body, {"Content-Type": "application/octet-stream"})[1]["id"]
               for _ in range(3)]
        assert _call(url + f"/v1/results/{ids[0]}/mask.nii.gz")[0] == 404
        assert _call(url + f"/v1/results/{ids[2]}/mask.nii.gz")[0] == 200
        assert sorted(os.listdir(tmp_path)) == sorted(ids[1:])
    finally:
        srv.shutdown()
        srv.server_close()
        pipe.close()


def test_cli_serve_answers_on_loopback(files):
    proc = subprocess.Popen([sys.executable, "-m", "deploysdk", "serve", files["model"], "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving threshold"), (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" on ")[-1].split()[0]
        assert _json(url + "/healthz")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
