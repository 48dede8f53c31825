//! Points `GATEWAY_WEB_DIR` at the end users' web page that `src/http/web.rs`
//! embeds: `web/dist` when it is built (`./scripts/build-web.sh`), else a
//! one-page fallback that says how to build it, so that a plain `cargo build`
//! works on a fresh clone without node.

use std::path::{Path, PathBuf};

/// The page embedded when `web/dist` is not built. `scripts/check-serve.sh`
/// and the `web_assets` test recognize it by "web page was not built".
const FALLBACK_PAGE: &str = r#"<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>Presence gateway</title>
  </head>
  <body>
    <h1>Presence gateway</h1>
    <p>The web page was not built when this gateway was compiled.</p>
    <p>Build it with <code>./scripts/build-web.sh</code> (or
      <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>), then
      rebuild the gateway (<code>cargo build -p gateway</code>).</p>
    <p>The HTTP API works without it: see <a href="/v1/openapi.json">/v1/openapi.json</a>.</p>
  </body>
</html>
"#;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest.join("../web");
    let dist = web.join("dist");
    let dir = if dist.join("index.html").is_file() {
        // Any change in dist (a rebuild with new hashed names, its removal)
        // re-embeds.
        println!("cargo:rerun-if-changed=../web/dist");
        canonical(&dist)
    } else {
        // Building the page creates web/dist: a change in web/ re-runs this.
        // Without web/ there is nothing to watch: a path that does not exist
        // would re-run this, and rebuild the gateway, on every build.
        if web.is_dir() {
            println!("cargo:rerun-if-changed=../web");
        }
        let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
        let missing = out.join("web-missing");
        if let Err(e) = std::fs::create_dir_all(&missing)
            .and_then(|()| std::fs::write(missing.join("index.html"), FALLBACK_PAGE))
        {
            panic!("cannot write {}: {e}", missing.display());
        }
        println!(
            "cargo:warning=web/dist is not built: the gateway serves a page that says so \
             (./scripts/build-web.sh builds it)"
        );
        canonical(&missing)
    };
    println!("cargo:rustc-env=GATEWAY_WEB_DIR={}", dir.display());
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}
