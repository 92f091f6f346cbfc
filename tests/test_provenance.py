"""Provenance: every file kind is built here, signed with a throwaway certificate chain made by the test.

C2PA files are signed with c2pa-python's Builder and an ES256 chain (root CA -> signer) generated
with `cryptography`; nothing is fetched or downloaded. The reader must call a file signed by an
unknown root "untrusted", the same file with its root configured as a trust anchor "valid", and
the file with pixels changed after signing "invalid".
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from realitycheck.intake import provenance as P

c2pa = pytest.importorskip("c2pa")
pytest.importorskip("cryptography")

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
SD_PARAMETERS = ("portrait photo of a woman, 85mm, natural light\nNegative prompt: blurry\n"
                 "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
                 "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.9.4")


# ---------------------------------------------------------------------------------------------
# building files
# ---------------------------------------------------------------------------------------------

def _pixels(seed: int = 0, size: int = 64) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    arr = np.stack([(x * 3 + seed) % 256, (y * 5) % 256, ((x + y) * 2) % 256], -1).astype(np.uint8)
    return Image.fromarray(arr)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def chain():
    """A root CA and a signing certificate (ES256), valid for a day either side of now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Imaginary Generator Ltd")])

    def usage(**on):
        keys = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
        return x509.KeyUsage(**{k: on.get(k, False) for k in keys})

    now = dt.datetime.now(dt.timezone.utc)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    base = lambda subj, issuer, pub: (x509.CertificateBuilder().subject_name(subj).issuer_name(issuer)  # noqa: E731
                                      .public_key(pub).serial_number(x509.random_serial_number())
                                      .not_valid_before(now - dt.timedelta(days=1))
                                      .not_valid_after(now + dt.timedelta(days=1)))
    root = (base(name("Test Root CA"), name("Test Root CA"), root_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    cert = (base(name("Test Signer"), root.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    return {"certs": pem(cert) + pem(root), "root": pem(root),
            "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())}


def sign(chain, data: bytes, mime: str, source_type: str = "trainedAlgorithmicMedia",
         agent: str = "Imaginary Diffusion XL") -> bytes:
    manifest = {"claim_generator_info": [{"name": "RealityCheck test", "version": "1"}],
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": DST + source_type,
                    "softwareAgent": {"name": agent}}]}}]}
    ctx = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}},
                                  "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}})
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain["certs"], chain["key"], None))
    out = io.BytesIO()
    c2pa.Builder(manifest, ctx).sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def _alter_jpeg_pixels(data: bytes) -> bytes:
    """Change entropy-coded pixel data after signing: the image still decodes, its hash does not match."""
    sos = data.rindex(b"\xff\xda")
    pos = sos + 40
    bad = bytearray(data)
    bad[pos] = (bad[pos] + 1) % 256 or 1
    if bad[pos] == 0xFF:
        bad[pos] = 0x12
    return bytes(bad)


def _xmp(source_type: str, form: str = "attribute") -> bytes:
    if form == "attribute":
        desc = f'<rdf:Description rdf:about="" Iptc4xmpExt:DigitalSourceType="{DST}{source_type}"/>'
    elif form == "resource":
        desc = (f'<rdf:Description rdf:about=""><Iptc4xmpExt:DigitalSourceType rdf:resource="{DST}{source_type}"/>'
                "</rdf:Description>")
    else:
        desc = (f'<rdf:Description rdf:about=""><Iptc4xmpExt:DigitalSourceType>{DST}{source_type}'
                "</Iptc4xmpExt:DigitalSourceType></rdf:Description>")
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            f'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">{desc}</rdf:RDF></x:xmpmeta>').encode()


def _camera_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    sub = exif.get_ifd(0x8769)
    sub[0x829A] = 1 / 250
    sub[0x829D] = 2.8
    sub[0x8827] = 400
    return _save(_pixels(), "JPEG", exif=exif)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _with_png_chunk(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]  # after the 8-byte signature + 25-byte IHDR chunk


def _with_jpeg_segment(jpg: bytes, marker: int, body: bytes) -> bytes:
    return jpg[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + jpg[2:]


# ---------------------------------------------------------------------------------------------
# C2PA
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signed_jpeg(chain) -> bytes:
    return sign(chain, _save(_pixels(), "JPEG", quality=90), "image/jpeg")


@pytest.fixture(scope="module")
def signed_png(chain) -> bytes:
    return sign(chain, _save(_pixels(1), "PNG"), "image/png", agent="Imaginary Image 2")


def test_signed_jpeg_declares_ai_untrusted_without_anchor(signed_jpeg, monkeypatch):
    monkeypatch.delenv(P.TRUST_ANCHORS_ENV, raising=False)
    p = P.read_provenance(signed_jpeg)
    assert p.kind == P.AI_GENERATED and p.declares_ai
    assert p.source == "c2pa" and p.signature == "untrusted"
    assert p.generator == "Imaginary Diffusion XL"
    assert "Imaginary Generator Ltd" in p.signer and "trainedAlgorithmicMedia" in p.claim
    assert "not on a configured trust list" in p.summary
    Image.open(io.BytesIO(signed_jpeg)).load()  # still an ordinary JPEG


def test_signed_png_declares_ai(signed_png):
    p = P.read_provenance(signed_png)
    assert (p.kind, p.source, p.generator) == (P.AI_GENERATED, "c2pa", "Imaginary Image 2")
    assert p.signature in ("untrusted", "valid")


def test_trust_anchor_makes_the_signature_valid(chain, signed_jpeg, tmp_path, monkeypatch):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(chain["root"])
    monkeypatch.setenv(P.TRUST_ANCHORS_ENV, str(anchors))
    p = P.read_provenance(signed_jpeg)
    assert p.signature == "valid" and "signer on the trust list" in p.summary


def test_pixels_changed_after_signing_is_invalid(signed_jpeg):
    altered = _alter_jpeg_pixels(signed_jpeg)
    Image.open(io.BytesIO(altered)).load()  # the image itself is fine
    p = P.read_provenance(altered)
    assert p.kind == P.AI_GENERATED  # the claim is still read ...
    assert p.signature == "invalid"  # ... but it no longer covers these pixels
    assert "INVALID" in p.summary and "no longer matches" in p.claim


def test_signed_capture_is_camera_kind(chain):
    p = P.read_provenance(sign(chain, _save(_pixels(2), "JPEG"), "image/jpeg", "digitalCapture", "Imaginary Cam"))
    assert p.kind == P.CAMERA and p.signature == "untrusted"


def test_unsigned_file_goes_without_the_library(monkeypatch):
    """No JUMBF bytes: c2pa is never asked (most files), and the answer is 'none'."""
    import builtins

    real_import = builtins.__import__

    def guard(name, *a, **k):
        assert name != "c2pa", "c2pa imported for a file without C2PA data"
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", guard)
    p = P.read_provenance(_save(_pixels(), "JPEG"))
    assert p.kind == P.NONE and not p.evidence and not p.notes and "No provenance" in p.summary


def test_settings_fetch_nothing():
    s = P.c2pa_settings()
    assert s["verify"]["remote_manifest_fetch"] is False and s["verify"]["ocsp_fetch"] is False
    assert s["core"]["allowed_network_hosts"] == []


# ---------------------------------------------------------------------------------------------
# XMP, PNG text, EXIF
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(P.DIGITAL_SOURCE_TYPES))
def test_every_digital_source_type_in_xmp(code):
    expected = P.DIGITAL_SOURCE_TYPES[code][0]
    p = P.read_provenance(_save(_pixels(), "JPEG", xmp=_xmp(code)))
    assert p.kind == expected, (code, p)
    assert p.source == "xmp" and p.signature is None and code in p.claim
    if expected in P.DECLARES_AI:
        assert "unsigned" in p.summary


@pytest.mark.parametrize("form", ["attribute", "resource", "element"])
def test_xmp_forms_in_png(form):
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _xmp("compositeWithTrainedAlgorithmicMedia", form).decode())
    p = P.read_provenance(_save(_pixels(), "PNG", pnginfo=info))
    assert p.kind == P.AI_EDITED and "compositeWithTrainedAlgorithmicMedia" in p.claim


def test_remote_manifest_reference_is_not_fetched():
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description rdf:about="" xmlns:dcterms="http://purl.org/dc/terms/" '
           b'dcterms:provenance="https://example.invalid/manifest.c2pa"/></rdf:RDF></x:xmpmeta>')
    p = P.read_provenance(_save(_pixels(), "JPEG", xmp=xmp))
    assert p.kind == P.NONE and any("remote C2PA manifest, which is not fetched" in n for n in p.notes)


def test_unknown_source_type_is_other():
    p = P.read_provenance(_save(_pixels(), "JPEG", xmp=_xmp("somethingNew")))
    assert p.kind == P.OTHER and "somethingNew" in p.claim


def test_png_with_stable_diffusion_parameters():
    info = PngInfo()
    info.add_text("parameters", SD_PARAMETERS)
    p = P.read_provenance(_save(_pixels(), "PNG", pnginfo=info))
    assert p.kind == P.AI_GENERATED and p.source == "png-text"
    assert "Stable Diffusion web UI" in p.generator and "v1-5-pruned-emaonly" in p.generator
    assert "portrait photo" in p.claim and "Negative prompt" not in p.claim


def test_png_with_comfyui_graph():
    info = PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}))
    info.add_text("workflow", json.dumps({"nodes": []}))
    p = P.read_provenance(_save(_pixels(), "PNG", pnginfo=info))
    assert p.kind == P.AI_GENERATED and p.generator == "ComfyUI"


def test_plain_prompt_text_is_not_comfyui():
    info = PngInfo()
    info.add_text("prompt", "say cheese")
    assert P.read_provenance(_save(_pixels(), "PNG", pnginfo=info)).kind == P.NONE


def test_jpeg_with_parameters_in_exif_user_comment():
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + SD_PARAMETERS.encode("utf-16-be")
    p = P.read_provenance(_save(_pixels(), "JPEG", exif=exif))
    assert p.kind == P.AI_GENERATED and "v1-5-pruned-emaonly" in p.generator


def test_exif_software_naming_a_generator():
    exif = Image.Exif()
    exif[0x0131] = "Adobe Firefly Image 3"
    p = P.read_provenance(_save(_pixels(), "JPEG", exif=exif))
    assert p.kind == P.AI_GENERATED and p.generator == "Adobe Firefly Image 3"


def test_ordinary_software_is_not_a_generator():
    exif = Image.Exif()
    exif[0x0131] = "Adobe Photoshop Lightroom Classic 13.0"
    assert P.read_provenance(_save(_pixels(), "JPEG", exif=exif)).kind == P.NONE


def test_camera_exif():
    p = P.read_provenance(_camera_jpeg())
    assert p.kind == P.CAMERA and p.camera == "Canon EOS R5"
    assert "1/250 s" in p.claim and "f/2.8" in p.claim and "ISO 400" in p.claim
    assert "unsigned" in p.summary


def test_ai_declaration_beats_camera_exif():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    p = P.read_provenance(_save(_pixels(), "JPEG", exif=exif, xmp=_xmp("trainedAlgorithmicMedia")))
    assert p.kind == P.AI_GENERATED and p.camera == "Canon EOS R5" and len(p.evidence) == 2


# ---------------------------------------------------------------------------------------------
# bad metadata: a note, never an exception
# ---------------------------------------------------------------------------------------------

def test_corrupt_exif_is_a_note():
    jpg = _with_jpeg_segment(_save(_pixels(), "JPEG"), 0xE1, b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0garbage")
    p = P.read_provenance(jpg)
    assert p.kind == P.NONE and any("EXIF" in n and "unreadable" in n for n in p.notes)


def test_compressed_text_bomb_is_refused_with_a_note():
    bomb = zlib.compress(b"A" * 20_000_000, 9)  # 20 MB of text in ~20 KB
    png = _with_png_chunk(_save(_pixels(), "PNG"), _png_chunk(b"zTXt", b"parameters\x00\x00" + bomb))
    p = P.read_provenance(png)
    assert p.kind == P.NONE and any("oversized metadata" in n for n in p.notes)


def test_huge_plain_text_chunk_is_clipped():
    info = PngInfo()
    info.add_text("parameters", "x" * 3_000_000 + "\nSteps: 20")
    p = P.read_provenance(_save(_pixels(), "PNG", pnginfo=info))
    assert p.kind == P.AI_GENERATED and len(p.claim) < 400 and len(json.dumps(p.to_dict())) < 5_000


def test_oversized_xmp_is_ignored_with_a_note():
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _xmp("trainedAlgorithmicMedia").decode() + " " * 1_200_000)
    p = P.read_provenance(_save(_pixels(), "PNG", pnginfo=info))
    assert p.kind == P.NONE and any("XMP packet" in n and "limit" in n for n in p.notes)


def test_damaged_c2pa_store_is_a_note(signed_jpeg):
    # cut the signed file's manifest segment (APP11) short: the JUMBF is unreadable
    start = signed_jpeg.index(b"\xff\xeb")
    length = struct.unpack(">H", signed_jpeg[start + 2:start + 4])[0]
    seg = bytearray(signed_jpeg[start:start + 2 + length])
    seg[40:200] = b"\x00" * 160
    damaged = signed_jpeg[:start] + bytes(seg) + signed_jpeg[start + 2 + length:]
    p = P.read_provenance(damaged)
    assert p.kind == P.NONE and p.signature is None
    assert any(n.startswith("C2PA data present but unreadable") for n in p.notes), p.notes


@pytest.mark.parametrize("data", [b"", b"not an image at all, but mentions c2pa", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
                                  b"\xff\xd8\xff\xeb\x00\x10JP c2pa junk!\xff\xd9"])
def test_garbage_never_raises(data):
    p = P.read_provenance(data)
    assert p.kind == P.NONE and isinstance(p.summary, str)


def test_missing_file_is_a_note(tmp_path):
    p = P.read_provenance(tmp_path / "absent.jpg")
    assert p.kind == P.NONE and p.notes and "cannot read" in p.notes[0]


# ---------------------------------------------------------------------------------------------
# beside a verdict
# ---------------------------------------------------------------------------------------------

def test_disagreement_sentences(signed_jpeg):
    ai = P.read_provenance(signed_jpeg)
    assert "The model says REAL" in P.disagreement(ai, "real")
    assert P.disagreement(ai, "fake") is None
    cam = P.read_provenance(_camera_jpeg())
    assert "The model says FAKE" in P.disagreement(cam, "fake") and "easy to copy" in P.disagreement(cam, "fake")
    assert P.disagreement(cam, "real") is None
    assert P.disagreement(P.Provenance(), "real") is None
    assert "REAL" in P.disagreement(ai.to_dict(), "real")  # works from JSON too


def test_count_declared():
    counts = P.count_declared([("fake", P.AI_GENERATED), ("fake", P.NONE), ("real", P.CAMERA), ("real", P.AI_EDITED)])
    assert counts["fake"] == {"files": 2, "declared_ai": 1, P.AI_GENERATED: 1, P.NONE: 1}
    assert counts["real"]["declared_ai"] == 1 and counts["real"][P.CAMERA] == 1


# ---------------------------------------------------------------------------------------------
# CLI: predict --json carries it for every kind
# ---------------------------------------------------------------------------------------------

def test_predict_json_shows_provenance_for_each_kind(tiny_checkpoint, signed_jpeg, signed_png, tmp_path, capsys):
    from realitycheck.serving import cli

    info = PngInfo()
    info.add_text("parameters", SD_PARAMETERS)
    files = {
        "c2pa.jpg": signed_jpeg, "c2pa.png": signed_png, "altered.jpg": _alter_jpeg_pixels(signed_jpeg),
        "xmp.jpg": _save(_pixels(), "JPEG", xmp=_xmp("compositeSynthetic")),
        "sd.png": _save(_pixels(), "PNG", pnginfo=info), "camera.jpg": _camera_jpeg(),
        "plain.jpg": _save(_pixels(), "JPEG"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    code = cli.main(["predict", *sorted(str(tmp_path / n) for n in files), "--weights", str(tiny_checkpoint),
                     "--json", "--no-progress"])  # in-process: the CLI's own subprocess tests cover the exits
    out = capsys.readouterr()
    assert code == 0, out.err
    got = {Path_name(d["path"]): d["provenance"] for d in json.loads(out.out)}
    assert got["c2pa.jpg"]["kind"] == "ai_generated" and got["c2pa.jpg"]["signature"] == "untrusted"
    assert got["c2pa.png"]["kind"] == "ai_generated"
    assert got["altered.jpg"]["signature"] == "invalid"
    assert got["xmp.jpg"]["kind"] == "ai_edited"
    assert got["sd.png"]["kind"] == "ai_generated" and got["sd.png"]["source"] == "png-text"
    assert got["camera.jpg"]["kind"] == "camera" and got["camera.jpg"]["camera"] == "Canon EOS R5"
    assert got["plain.jpg"]["kind"] == "none"
    assert cli.main(["predict", str(tmp_path / "c2pa.jpg"), "--weights", str(tiny_checkpoint), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "provenance: declared AI-generated" in text
    if "\treal\t" in text:
        assert "NOTE: The model says REAL, but the file declares it was generated with AI by Imaginary Diffusion XL" in text


def Path_name(p: str) -> str:  # noqa: N802 - tiny helper
    return p.replace("\\", "/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# evaluate: a column, per-source counts, the report
# ---------------------------------------------------------------------------------------------

def test_evaluate_counts_declared_ai_per_source(tiny_classifier, signed_jpeg, tmp_path):
    from realitycheck.analysis import evaluate

    info = PngInfo()
    info.add_text("parameters", SD_PARAMETERS)
    (tmp_path / "fake").mkdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "fake" / "c2pa.jpg").write_bytes(signed_jpeg)
    (tmp_path / "fake" / "sd.png").write_bytes(_save(_pixels(3), "PNG", pnginfo=info))
    (tmp_path / "fake" / "plain.jpg").write_bytes(_save(_pixels(4), "JPEG"))
    (tmp_path / "real" / "camera.jpg").write_bytes(_camera_jpeg())
    (tmp_path / "real" / "xmp.jpg").write_bytes(_save(_pixels(5), "JPEG", xmp=_xmp("compositeSynthetic")))
    csv_path = tmp_path / "out.csv"
    result = evaluate.evaluate_folder(tiny_classifier, tmp_path, workers=0, csv_path=csv_path)
    kinds = dict(zip(result.table["path"].map(Path_name), result.table[P.PROVENANCE_COLUMN]))
    assert kinds == {"c2pa.jpg": "ai_generated", "sd.png": "ai_generated", "plain.jpg": "none",
                     "camera.jpg": "camera", "xmp.jpg": "ai_edited"}
    s = result.summary(0.5)
    by = s["provenance"]["by_group"]
    assert (by["fake"]["declared_ai"], by["fake"]["files"], by["real"]["declared_ai"]) == (2, 3, 1)
    assert s["provenance"]["declared_ai"] == 3
    # disagreements are exactly the declared-AI files called real plus camera files called fake
    t = evaluate.M.rethreshold(result.table, 0.5)
    expected = sum(1 for k, lab in zip(t[P.PROVENANCE_COLUMN], t["predicted"])
                   if (k in P.DECLARES_AI and lab == "real") or (k == "camera" and lab == "fake"))
    assert s["provenance"]["disagreements"] == expected
    assert "provenance: 3 files declare AI (real: 1 of 2, fake: 2 of 3)" in evaluate.format_summary(s)
    header = csv_path.read_text().splitlines()[0]
    assert header.endswith(",provenance")
    html = evaluate.write_report(tmp_path / "r.html", tiny_classifier, result,
                                 threshold=tiny_classifier.threshold).read_text()
    assert "What the files declare (provenance)" in html


def test_resume_from_a_csv_without_the_column(tiny_classifier, signed_jpeg, tmp_path):
    from realitycheck.analysis import evaluate

    (tmp_path / "fake").mkdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "fake" / "c2pa.jpg").write_bytes(signed_jpeg)
    (tmp_path / "real" / "plain.jpg").write_bytes(_save(_pixels(4), "JPEG"))
    old = tmp_path / "old.csv"
    path = str(tmp_path / "fake" / "c2pa.jpg")
    old.write_text(",".join(evaluate.TABLE_COLUMNS) + f"\n{path},fake,0.9,fake,True,0,0.01,\n")
    result = evaluate.evaluate_folder(tiny_classifier, tmp_path, workers=0, csv_path=old, resume=True)
    assert len(result.table) == 2
    resumed = result.table[result.table["path"] == path]
    assert float(resumed["p_fake"].item()) == 0.9  # taken from the earlier CSV, not scored again
    assert dict(zip(result.table["path"].map(Path_name), result.table[P.PROVENANCE_COLUMN])) == {
        "c2pa.jpg": "ai_generated", "plain.jpg": "none"}


# ---------------------------------------------------------------------------------------------
# dashboard: the panel beside the verdict, and the session history
# ---------------------------------------------------------------------------------------------

def test_classify_page_panel_and_history(tiny_checkpoint, signed_jpeg, monkeypatch):
    pytest.importorskip("streamlit.testing.v1")
    from streamlit.testing.v1 import AppTest

    from tests.helpers import APP_PAGES as PAGES
    from tests.helpers import REPO_ROOT

    APP = str(REPO_ROOT / "streamlit_app.py")
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(tiny_checkpoint))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tiny_checkpoint.parent))
    monkeypatch.delenv("REALITYCHECK_PUBLIC", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["threshold"] = 0.99  # the untrained model then says "real" (p_fake < 0.99)
    at.run()
    at.file_uploader(key="classify_files").set_value([("signed.jpg", signed_jpeg, "image/jpeg"),
                                                      ("plain.jpg", _save(_pixels(7), "JPEG"), "image/jpeg")])
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    assert not at.exception, at.exception
    rows = {h["name"]: h for h in at.session_state["history"]}
    assert rows["signed.jpg"]["provenance"] == "declared AI-generated"
    assert rows["plain.jpg"]["provenance"] == "no provenance" and rows["plain.jpg"]["disagreement"] == ""
    errors = [e.value for e in at.error]
    if rows["signed.jpg"]["label"] == "real":
        assert any(e.startswith("**Model and file disagree.** The model says REAL, but the file declares it was "
                                "generated with AI by Imaginary Diffusion XL") for e in errors), errors
    else:  # p_fake >= 0.99: no disagreement, the declaration is shown as a warning
        assert any("declared AI-generated" in w.value for w in at.warning)
    captions = " ".join(c.value for c in at.caption)
    assert "What the file declares:** no provenance" in captions  # the plain photo
    at.switch_page(PAGES["history"]).run()
    assert not at.exception
    view = at.dataframe[0].value
    assert list(view["provenance"]) == ["declared AI-generated", "no provenance"]
    if rows["signed.jpg"]["label"] == "real":
        assert any("signed.jpg" in e.value and "The model says REAL" in e.value for e in at.error)


def test_evaluate_page_counts_declarations(tiny_checkpoint, signed_jpeg, monkeypatch):
    pytest.importorskip("streamlit.testing.v1")
    from streamlit.testing.v1 import AppTest

    from tests.helpers import APP_PAGES as PAGES
    from tests.helpers import REPO_ROOT

    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(tiny_checkpoint))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tiny_checkpoint.parent))
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page(PAGES["evaluate"]).run()
    at.radio(key="eval_source").set_value("Image files upload").run()
    at.file_uploader(key="eval_files_real").set_value([("cam.jpg", _camera_jpeg(), "image/jpeg"),
                                                       ("signed.jpg", signed_jpeg, "image/jpeg")])
    at.file_uploader(key="eval_files_fake").set_value([("plain.jpg", _save(_pixels(8), "JPEG"), "image/jpeg")])
    at.button(key="FormSubmitter:eval_files_form-Evaluate").click().run()
    assert not at.exception, at.exception
    assert any(e.label == "What the files declare (provenance): 1 declare AI" for e in at.expander), \
        [e.label for e in at.expander]
    s = at.session_state["evaluation"]["result"].summary(0.5)
    assert s["provenance"]["by_group"]["real"]["declared_ai"] == 1
    assert s["provenance"]["by_group"]["real"]["camera"] == 1


def test_bad_input_corpus_never_raises_and_never_decodes_pixels(tmp_path, monkeypatch):
    """Metadata only: no case of the shared bad-input corpus makes provenance decode an image
    (a 50 MP PNG or a bomb would otherwise cost seconds), raise, or warn."""
    import warnings

    from PIL import ImageFile

    from tests.bad_inputs_corpus import corpus

    cases = list(corpus(tmp_path))  # built first: building decodes images
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.format) or real_load(self))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for case in cases:
            src = getattr(case, "data", None) or getattr(case, "path", None)
            if src is None:
                continue
            p = P.read_provenance(src)
            assert p.kind in P.KINDS and all("\n" not in n for n in p.notes), (case.name, p)
    assert decoded == []


def test_a_provenance_survives_its_dict_form():
    """What crosses Ray's stages as JSON comes back as the same Provenance."""
    import json

    info = PngInfo()
    info.add_text("parameters", SD_PARAMETERS)
    p = P.read_provenance(_save(_pixels(), "PNG", pnginfo=info))
    back = P.Provenance.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p and back.declares_ai
