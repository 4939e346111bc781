"""GET /docs: Swagger UI for /openapi.json from the vendored swagger-ui-dist (no CDN, so it works
offline) with no inline script (its settings are in static/docs.js), so the CSP holds there too."""

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
SWAGGER_UI = "/static/vendor/swagger-ui-dist-5.35.0"
PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>virtdeck API</title>
  <link rel="stylesheet" href="{SWAGGER_UI}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{SWAGGER_UI}/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    """The API's interactive documentation (what routes there are; it shows no data)."""
    return HTMLResponse(PAGE)
