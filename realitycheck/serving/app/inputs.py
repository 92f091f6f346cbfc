"""What users hand in: the file types the uploaders take, the per-session upload budget, zips of labelled
folders, and the example a labelled-folder box shows."""

from __future__ import annotations

import hashlib

import streamlit as st

from realitycheck.intake import uploads
from realitycheck.serving.app import public, state
from realitycheck.serving.app.errors import show_error

# the example must be one the default roots accept: by default only the folder the dashboard runs in
LABELLED_PLACEHOLDER = "a folder with real/ and fake/ inside, e.g. labelled (relative to where the dashboard runs)"
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def accept_upload(data: bytes, name: str) -> str | None:
    """Count an upload against the per-session budget; the one-line refusal when it is over.

    The same bytes uploaded again are not counted twice. The rule itself is the package's
    (`uploads.check_upload_size`).
    """
    h = sha256(data)
    seen = state.get(state.SEEN_UPLOADS)
    if h in seen:
        return None
    used = state.get(state.UPLOADED_BYTES)
    budget = public.settings().session_upload_bytes
    per_file = int(st.get_option("server.maxUploadSize")) * 1024 * 1024
    try:
        total = uploads.check_upload_size(len(data), used, per_file, budget, name=name)
    except uploads.UploadError as exc:
        return str(exc)
    seen.add(h)
    state.put(state.UPLOADED_BYTES, total)
    return None


def unpack_zip_upload(up, prefix: str, details: str | None = None):
    """An uploaded zip of real/ and fake/ folders, counted against the upload budget and unpacked into
    this session's temporary folder: (folder, files skipped, temp dir), or None after showing why not."""
    data = up.getvalue()
    over = accept_upload(data, up.name)
    if over:
        show_error(over)
        return None
    tmp = state.session_temp_dir(prefix)
    try:
        with st.spinner("Unpacking the zip…"):
            folder, skipped = uploads.extract_labelled_zip(data, tmp.name)
    except uploads.UploadError as exc:
        state.drop_temp_dir(tmp)
        show_error(str(exc), details=details)
        return None
    return folder, skipped, tmp
