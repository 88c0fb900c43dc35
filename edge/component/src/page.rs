//! The buyer page: a small static front end (plain HTML, CSS and JavaScript, no framework and
//! no CDN) compiled into the component, so it is served wherever the edge runs, by the same
//! application that serves the API it calls (`GET /`, `GET /drops/{productId}`,
//! `GET /assets/app.js`, `GET /assets/app.css`). It needs no token to load; it calls the
//! buyer API with the bearer token the buyer signs in with (locally: the development issuer,
//! `flashgate token`, passed as `#token=…`).

use crate::http::Response;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Scripts, styles and requests from this origin only; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page asset `name` ([`flashgate_core::routes::BuyerRoute::Page`]).
pub fn serve(name: &str) -> Response {
    let (body, content_type, cache) = match name {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8", "public, max-age=60"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8", "public, max-age=60"),
        _ => (INDEX, "text/html; charset=utf-8", "no-cache"),
    };
    let mut response = Response::new(200);
    for (header, value) in [
        ("content-type", content_type),
        ("cache-control", cache),
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        response.headers.push((header.to_owned(), value.to_owned()));
    }
    response.body = body.as_bytes().to_vec();
    response
}
