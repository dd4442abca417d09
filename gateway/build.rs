//! Builds the web console (`web/` at the workspace root) that `inventoryd`
//! serves at `/console/`, copies it into `OUT_DIR/console` and tells the
//! gateway's `RustEmbed` to embed that (`INVENTORY_CONSOLE_DIR`).
//!
//! `web/dist` is used as it is when it was built from the current sources
//! (a hash of them is kept beside it in `web/.dist-source-hash`); otherwise
//! it is built with `npm ci` (when `node_modules` is missing or older than
//! the lock file) and `npm run build`. Without npm, or with
//! `INVENTORY_CONSOLE=skip`, the binary is built without a console (or with
//! an out-of-date one, with a warning) and `/console/` says how to build it.
//! A build that npm starts and fails stops the cargo build, with npm's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the console is built from, relative to `web/`.
const SOURCES: &[&str] =
    &["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts", "src", "public"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = manifest.parent().expect("the gateway is in the workspace").join("web");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=INVENTORY_CONSOLE");
    // (A path that does not exist would rerun this script on every build.)
    for source in SOURCES.iter().map(|s| web.join(s)).filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    // Embedded from a copy of its own, so the binary never depends on what
    // later happens to web/dist.
    let embedded = out.join("console");
    if embedded.exists() {
        fs::remove_dir_all(&embedded).expect("OUT_DIR is writable");
    }
    fs::create_dir_all(&embedded).expect("OUT_DIR is writable");
    if let Some(dist) = console(&web) {
        copy_dir(&dist, &embedded);
    }
    println!("cargo:rustc-env=INVENTORY_CONSOLE_DIR={}", embedded.display());
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("web/dist is readable").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            fs::create_dir_all(&target).expect("OUT_DIR is writable");
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("OUT_DIR is writable");
        }
    }
}

/// The built console, if there is one.
fn console(web: &Path) -> Option<PathBuf> {
    let dist = web.join("dist");
    let stamp = web.join(".dist-source-hash");
    if !web.join("package.json").exists() {
        return None;
    }
    let hash = format!("{:016x}", source_hash(web));
    let built = dist.join("index.html").exists();
    if built && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == hash) {
        return Some(dist);
    }
    let skip = std::env::var("INVENTORY_CONSOLE").is_ok_and(|v| v == "skip");
    let have_npm = !skip && Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_npm {
        let why = if skip { "INVENTORY_CONSOLE=skip" } else { "npm was not found" };
        if built {
            println!("cargo:warning=console: {why}; embedding web/dist, which may be older than web/src");
            return Some(dist);
        }
        println!("cargo:warning=console: {why}; /console/ will say the console is not built (see web/README.md)");
        return None;
    }
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    if modified(&installed).is_none_or(|i| modified(&lock).is_some_and(|l| l > i)) {
        npm(web, &["ci", "--no-audit", "--no-fund"]);
    }
    npm(web, &["run", "build"]);
    assert!(dist.join("index.html").exists(), "console: npm run build made no web/dist/index.html");
    fs::write(&stamp, &hash).expect("web/ is writable");
    Some(dist)
}

fn npm(web: &Path, args: &[&str]) {
    let output = Command::new("npm").args(args).current_dir(web).output().expect("npm runs");
    if !output.status.success() {
        panic!(
            "console: `npm {}` in {} failed ({}); build without the console with INVENTORY_CONSOLE=skip\n{}\n{}",
            args.join(" "),
            web.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// FNV-1a over every source file's path and bytes, in path order.
fn source_hash(web: &Path) -> u64 {
    let mut files = Vec::new();
    for source in SOURCES {
        collect(&web.join(source), &mut files);
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for file in files {
        feed(file.strip_prefix(web).unwrap_or(&file).to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&fs::read(&file).unwrap_or_default());
        feed(&[0]);
    }
    hash
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            collect(&entry.path(), files);
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    }
}
