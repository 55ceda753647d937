//! The Python venv (`tools/setup.sh` makes it) that runs real KServe servers and clients.

use std::path::PathBuf;
use std::process::Command;

use crate::fixture::repo;

/// The venv's python if it can run KServe; otherwise why not.
fn kserve_python() -> Result<PathBuf, String> {
    let python = repo().join("target/peer-venv/bin/python");
    if !python.exists() {
        return Err(format!("{} is missing; run tools/setup.sh", python.display()));
    }
    let probe = Command::new(&python).args(["-c", "import kserve, onnxruntime"]).output();
    match probe {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!(
            "{} cannot import kserve and onnxruntime ({}); run tools/setup.sh",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", python.display())),
    }
}

/// The KServe venv's python, or `None` after saying why `test` is skipped. With `CI` set,
/// a missing venv fails the test instead: CI installs it.
pub fn kserve_python_or_skip(test: &str) -> Option<PathBuf> {
    match kserve_python() {
        Ok(p) => Some(p),
        Err(why) if std::env::var_os("CI").is_some() => panic!("CI needs the KServe venv: {why}"),
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// The venv's python for tests that need onnx and onnxruntime (onnx's backend test cases,
/// onnxruntime as the reference). Panics saying to run `tools/setup.sh` when the venv is
/// missing or lacks them: those tests do not skip.
pub fn onnx_python() -> PathBuf {
    let python = repo().join("target/peer-venv/bin/python");
    let probe = Command::new(&python).args(["-c", "import onnx, onnxruntime"]).output();
    match probe {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} cannot import onnx and onnxruntime ({}); run tools/setup.sh",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run {} ({e}); run tools/setup.sh", python.display()),
    }
}
