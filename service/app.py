"""The feature-dictionary web service: HTML pages (plain HTML + vanilla JS, offline) and their JSON API.

Every page has a JSON counterpart under /api; FastAPI serves the OpenAPI schema at /openapi.json and
interactive docs at /docs. All errors are JSON `{"error": {"status", "code", "message"}}`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from visae.service.catalog import DICTIONARY_ID, Catalog, Dictionary
from visae.service.encode import encode_image, encoding_json
from visae.service.errors import ApiError, install_error_handlers
from visae.service.heatmap import overlay, png_bytes
from visae.service.intervene import intervention_json
from visae.service.limits import BodySizeLimit
from visae.service.uploads import UploadLimits, decode_upload

WEB = Path(__file__).parent / "web"
DictId = Annotated[str, PathParam(pattern=DICTIONARY_ID.pattern, description="a dictionary id from /api/dictionaries")]
FeatureId = Annotated[int, PathParam(ge=0, description="latent index, 0..d_sae-1")]
ImageId = Annotated[int, PathParam(ge=0, description="store image index with a thumbnail")]
PNG_CACHE = {"Cache-Control": "public, max-age=3600"}
SORT_HELP = "any numeric column, e.g. rank, score, freq (default: rank; feature when not evaluated)"
ABLATE_HELP = "latents to switch off (repeat the field for several)"
BOOST_HELP = "latents to clamp to SCALE × their typical maximum on every token (repeat for several)"
SCALE_HELP = "boost: multiple of each boosted latent's typical maximum (median activation on its top images)"
HOOK_HELP = "the hook to intervene at (default: the dictionary's; any other is refused)"


def create_app(catalog: Catalog, limits: UploadLimits = UploadLimits()) -> FastAPI:
    app = FastAPI(title="visae", version="0.1.0",
                  summary="Browse SAE feature dictionaries of vision models and encode images with them.")
    app.state.catalog = catalog
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_bytes + 64 * 1024)
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")

    def find(dictionary_id: str) -> Dictionary:
        try:
            return catalog.get(dictionary_id)
        except KeyError as err:
            raise ApiError(404, "unknown_dictionary", err.args[0]) from None

    def find_feature(dictionary_id: str, feature: int) -> Dictionary:
        dictionary = find(dictionary_id)
        try:
            dictionary.check_feature(feature)
        except IndexError as err:
            raise ApiError(404, "unknown_feature", err.args[0]) from None
        return dictionary

    _add_pages(app, find, find_feature)
    _add_api(app, catalog, find, find_feature, limits)
    return app


@lru_cache(maxsize=None)
def _page_text(name: str) -> str:
    return (WEB / f"{name}.html").read_text(encoding="utf-8")


def _page(name: str) -> HTMLResponse:
    """The page shell; its script fetches the page's JSON counterpart."""
    return HTMLResponse(_page_text(name))


def _add_pages(app: FastAPI, find, find_feature) -> None:
    @app.get("/", response_class=HTMLResponse, tags=["pages"], summary="Dictionary list (JSON: /api/dictionaries)")
    def dictionaries_page():
        return _page("index")

    @app.get("/d/{dictionary_id}", response_class=HTMLResponse, tags=["pages"],
             summary="Feature browser (JSON: /api/dictionaries/{id}/features)")
    def browser_page(dictionary_id: DictId):
        find(dictionary_id)
        return _page("dictionary")

    @app.get("/d/{dictionary_id}/features/{feature}", response_class=HTMLResponse, tags=["pages"],
             summary="One feature (JSON: /api/dictionaries/{id}/features/{feature})")
    def feature_page(dictionary_id: DictId, feature: FeatureId):
        find_feature(dictionary_id, feature)
        return _page("feature")

    @app.get("/d/{dictionary_id}/encode", response_class=HTMLResponse, tags=["pages"],
             summary="Encode an image (JSON: POST /api/dictionaries/{id}/encode)")
    def encode_page(dictionary_id: DictId):
        find(dictionary_id)
        return _page("encode")


def _add_api(app: FastAPI, catalog: Catalog, find, find_feature, limits: UploadLimits) -> None:
    @app.get("/api/dictionaries", tags=["dictionaries"], summary="All served dictionaries with summary figures")
    def list_dictionaries() -> dict:
        return {"dictionaries": [d.summary() for d in catalog]}

    @app.get("/api/dictionaries/{dictionary_id}", tags=["dictionaries"],
             summary="One dictionary: summary, firing histogram, sortable columns, labels")
    def get_dictionary(dictionary_id: DictId) -> dict:
        return find(dictionary_id).details()

    @app.get("/api/dictionaries/{dictionary_id}/features", tags=["features"],
             summary="Feature browser: sorted by rank or any score, filtered by label, searched by text")
    def list_features(
        dictionary_id: DictId,
        sort: Annotated[str | None, Query(max_length=64, description=SORT_HELP)] = None,
        order: Literal["asc", "desc"] | None = None,
        label: Annotated[str | None, Query(max_length=200, description="exact label value")] = None,
        q: Annotated[str | None, Query(max_length=200, description="substring of any label")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict:
        dictionary = find(dictionary_id)
        sort = sort or dictionary.default_sort
        descending = (order or ("asc" if sort in ("rank", "feature") else "desc")) == "desc"
        try:
            return dictionary.browse(sort, descending, label or None, q or None, offset, limit)
        except ValueError as err:
            raise ApiError(422, "invalid_sort", str(err)) from None

    @app.get("/api/dictionaries/{dictionary_id}/features/{feature}", tags=["features"],
             summary="One feature: top images, quantile samples, frequency, scores, labels, similar features, neurons")
    def get_feature(dictionary_id: DictId, feature: FeatureId) -> dict:
        return find_feature(dictionary_id, feature).feature_detail(feature)

    @app.get("/api/dictionaries/{dictionary_id}/features/{feature}/{which}/{slot}.png", tags=["images"],
             response_class=Response, responses={200: {"content": {"image/png": {}}}},
             summary="A top or quantile example image with the feature's patch heatmap drawn over it")
    def example_png(dictionary_id: DictId, feature: FeatureId, which: Literal["top", "quantile"],
                    slot: Annotated[int, PathParam(ge=0)]) -> Response:
        dictionary = find_feature(dictionary_id, feature)
        return Response(_example_png(dictionary, feature, which, slot, limits), media_type="image/png",
                        headers=PNG_CACHE)

    @app.get("/api/dictionaries/{dictionary_id}/images", tags=["images"],
             summary="Store images with thumbnails (to pick one to encode)")
    def list_images(dictionary_id: DictId, offset: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=500)] = 60) -> dict:
        dictionary = find(dictionary_id)
        indices = dictionary.image_indices
        return {"dictionary": dictionary.id, "total": len(indices), "offset": offset, "limit": limit,
                "images": [{"image": i, "image_png": f"/api/dictionaries/{dictionary.id}/images/{i}.png",
                            "encode": f"/api/dictionaries/{dictionary.id}/images/{i}/encode"}
                           for i in indices[offset:offset + limit]]}

    @app.get("/api/dictionaries/{dictionary_id}/images/{image}.png", tags=["images"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}}, summary="A store image's evaluation thumbnail")
    def image_png(dictionary_id: DictId, image: ImageId) -> Response:
        return Response(_thumb_bytes(find(dictionary_id), image), media_type="image/png", headers=PNG_CACHE)

    @app.post("/api/dictionaries/{dictionary_id}/encode", tags=["encode"],
              summary="Encode an uploaded image: top features with patch heatmaps, per-patch top features")
    def encode_upload(dictionary_id: DictId,
                      file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, GIF or BMP")]) -> dict:
        dictionary = find(dictionary_id)
        data = file.file.read(limits.max_bytes + 1)
        image = decode_upload(data, file.content_type, limits)
        source = {"kind": "upload", "filename": (file.filename or "")[:200], "width": image.width,
                  "height": image.height}
        return encoding_json(dictionary, encode_image(dictionary, image), source)

    @app.get("/api/dictionaries/{dictionary_id}/images/{image}/encode", tags=["encode"],
             summary="Encode a store image (its evaluation thumbnail)")
    def encode_store_image(dictionary_id: DictId, image: ImageId) -> dict:
        dictionary = find(dictionary_id)
        picture = _thumb_image(dictionary, image, limits)
        source = {"kind": "store", "image": image, "width": picture.width, "height": picture.height}
        return encoding_json(dictionary, encode_image(dictionary, picture), source)

    @app.post("/api/dictionaries/{dictionary_id}/intervene", tags=["intervene"],
              summary="An uploaded image's predictions with features switched off or boosted in the forward pass")
    def intervene_upload(dictionary_id: DictId,
                         file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, GIF or BMP")],
                         ablate: Annotated[list[int], Form(description=ABLATE_HELP)] = [],
                         boost: Annotated[list[int], Form(description=BOOST_HELP)] = [],
                         scale: Annotated[float, Form(ge=0, le=100, description=SCALE_HELP)] = 4.0,
                         hook: Annotated[str | None, Form(max_length=64, description=HOOK_HELP)] = None) -> dict:
        dictionary = find(dictionary_id)
        image = decode_upload(file.file.read(limits.max_bytes + 1), file.content_type, limits)
        source = {"kind": "upload", "filename": (file.filename or "")[:200], "width": image.width,
                  "height": image.height}
        return intervention_json(dictionary, image, ablate, boost, scale, hook, source)

    @app.get("/api/dictionaries/{dictionary_id}/images/{image}/intervene", tags=["intervene"],
             summary="A store image's predictions with features switched off or boosted in the forward pass")
    def intervene_store_image(dictionary_id: DictId, image: ImageId,
                              ablate: Annotated[list[int], Query(description=ABLATE_HELP)] = [],
                              boost: Annotated[list[int], Query(description=BOOST_HELP)] = [],
                              scale: Annotated[float, Query(ge=0, le=100, description=SCALE_HELP)] = 4.0,
                              hook: Annotated[str | None, Query(max_length=64, description=HOOK_HELP)] = None) -> dict:
        dictionary = find(dictionary_id)
        picture = _thumb_image(dictionary, image, limits)
        source = {"kind": "store", "image": image, "width": picture.width, "height": picture.height}
        return intervention_json(dictionary, picture, ablate, boost, scale, hook, source)


def _thumb_bytes(dictionary: Dictionary, image: int) -> bytes:
    """A thumbnail's bytes: only a regular file inside the dictionary folder (`Dictionary.read_thumb`)."""
    try:
        return dictionary.read_thumb(image)
    except IndexError as err:
        raise ApiError(404, "unknown_image", err.args[0]) from None


def _thumb_image(dictionary: Dictionary, image: int, limits: UploadLimits) -> Image.Image:
    """A thumbnail decoded under the upload limits: a file in the folder is not trusted more than an upload."""
    return decode_upload(_thumb_bytes(dictionary, image), "image/png", limits)


@lru_cache(maxsize=4096)
def _example_png(dictionary: Dictionary, feature: int, which: str, slot: int, limits: UploadLimits) -> bytes:
    try:
        image, heat, scale = dictionary.example(feature, which, slot)
    except IndexError as err:
        raise ApiError(404, "unknown_example", err.args[0]) from None
    return png_bytes(overlay(_thumb_image(dictionary, image, limits), heat, scale))
