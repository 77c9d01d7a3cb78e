//! Pages as a person sees them: headless Chromium (Debian's `chromium`) renders a page to a
//! screenshot and to its DOM after scripts ran. `.ci/run` installs it; elsewhere tests that
//! need it skip with a message.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn binary() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

fn headless(bin: &Path, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--allow-file-access-from-files",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM after the page's scripts ran.
pub fn dom(bin: &Path, profile: &Path, page: &Path) -> String {
    let out = headless(bin, profile)
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Screenshot `page` at 1280×`height` into `png`.
pub fn screenshot(bin: &Path, profile: &Path, page: &Path, png: &Path, height: u32) {
    let status = headless(bin, profile)
        .arg(format!("--window-size=1280,{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
        .status;
    assert!(status.success(), "chromium failed on {}", page.display());
}

/// Fraction of pixels that are not (near) white, and the number of distinct colours.
pub fn ink(png: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(png).expect("screenshot"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png data");
    let channels = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let mut inked = 0usize;
    let mut colours = std::collections::HashSet::new();
    let n = px.len() / channels;
    for p in px.chunks(channels) {
        if p[..3].iter().any(|&v| v < 235) {
            inked += 1;
        }
        colours.insert((p[0] >> 3, p[1] >> 3, p[2] >> 3));
    }
    (inked as f64 / n.max(1) as f64, colours.len())
}

/// Relative `href` / `src` targets of an HTML file that do not exist.
pub fn broken_links(html_file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(html_file).expect("read page");
    let dir = html_file.parent().unwrap();
    let mut broken = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for (at, _) in text.match_indices(attr) {
            let rest = &text[at + attr.len()..];
            let target = &rest[..rest.find('"').unwrap_or(0)];
            if target.is_empty()
                || target.starts_with('#')
                || target.contains("://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if !dir.join(path).exists() {
                broken.push(format!("{} → {target}", html_file.display()));
            }
        }
    }
    broken
}

/// Every `.html` file under `dir`.
pub fn html_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(html_files(&p));
        } else if p.extension().is_some_and(|x| x == "html") {
            out.push(p);
        }
    }
    out.sort();
    out
}
