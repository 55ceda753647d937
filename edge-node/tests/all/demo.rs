//! `edge-node demo` end to end: a short run in which the central node is killed half-way and
//! restarted, its `--json` figures, and its `--report` page rendered in headless Chromium.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The sections the report must have, by their ids.
const SECTIONS: [&str; 8] =
    ["summary", "tier-split", "latency", "timeline", "outage", "threshold-curve", "models", "figures"];
/// Charts in the report: tier split, latency, timeline, threshold curve.
const CHARTS: usize = 4;
/// The browser window: the report's column, and tall enough for the whole page.
const WINDOW: &str = "--window-size=1100,4400";

/// Debian's `chromium` on the PATH; the test fails saying how to get it if there is none.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("chromium is not installed: run tools/setup.sh (it installs Debian's `chromium`)")
        })
}

/// Runs headless Chromium on `page` with `args`, a profile of its own under `dir`, and its
/// log (console messages included) on stderr.
fn browse(browser: &Path, dir: &Path, page: &Path, args: &[&str]) -> Output {
    let output = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium failed:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

#[test]
fn a_short_demo_with_an_outage_answers_everything_and_its_report_renders() {
    // Before the demo's half minute: a machine without a browser fails at once.
    let browser = chromium();
    // The report and the screenshot stay after the test, for a person to look at.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-report");
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.html");
    let _ = std::fs::remove_file(&report);
    // A threshold this high escalates about a quarter of these images, so that some reach the
    // edge while the central node is down (degraded answers) and soon after its restart
    // (recovery). The run is paced over about 22 s so that both are inside it.
    let demo = Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .args(["demo", "--json", "--limit", "120", "--latency-samples", "5", "--threshold", "0.9999"])
        .args(["--kill-central-at", "50%", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(demo.status.success(), "the demo failed:\n{stderr}");

    // With --json, stdout holds figures and nothing else.
    let figures: HashMap<String, f64> = String::from_utf8_lossy(&demo.stdout)
        .lines()
        .map(|line| {
            let f: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON figure ({e}): {line}"));
            (f["figure"].as_str().unwrap().to_owned(), f["value"].as_f64().unwrap())
        })
        .collect();
    let figure = |name: &str| {
        *figures
            .get(name)
            .unwrap_or_else(|| panic!("no figure {name}; stderr:\n{stderr}\nfigures: {figures:?}"))
    };
    assert_eq!(figure("demo.failed_requests"), 0.0, "{stderr}");
    assert!(
        figure("demo.degraded_share") > 0.0,
        "no degraded answer while the central node was down:\n{stderr}"
    );
    assert!(figure("demo.recovery_s") > 0.0, "{stderr}");
    assert!((0.0..=1.0).contains(&figure("demo.cached_share")));
    for tier in ["edge", "central"] {
        assert!(figure(&format!("demo.p99_us.{tier}")) > 0.0);
    }

    // Self-contained: no script, nothing fetched, and a policy that forbids fetching.
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));
    for outside in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(outside), "the report refers to something outside it: {outside}");
    }
    assert_eq!(html.matches("<svg").count(), CHARTS);

    // It loads in a browser without a console message (a blocked fetch, a parse error) and
    // has every section with its chart.
    let dom = browse(&browser, &dir, &report, &["--dump-dom"]);
    let log = String::from_utf8_lossy(&dom.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the browser's console says:\n{}", console.join("\n"));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for section in SECTIONS {
        assert!(
            dom.contains(&format!("<section id=\"{section}\"")),
            "no section {section} in the rendered page"
        );
    }
    assert_eq!(dom.matches("<svg").count(), CHARTS, "the rendered page lost a chart");
    assert!(dom.contains("central killed") && dom.contains("escalations resume"), "the outage is not marked");

    let screenshot = dir.join("report.png");
    let shot = format!("--screenshot={}", screenshot.display());
    browse(&browser, &dir, &report, &[&shot, WINDOW]);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", screenshot.display());
    eprintln!("report: {}\nscreenshot: {}", report.display(), screenshot.display());
}
