//! Python for the EasyR1 tests: EasyR1's config validator from `../shared/easyr1`, and an
//! interpreter path where `omegaconf==2.3.0` imports (installed from the package index into
//! the test's own directory when the interpreter lacks it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn validator() -> PathBuf {
    let p = root().join("../shared/easyr1/validate.py");
    assert!(
        p.exists(),
        "{} is missing: the EasyR1 validator comes with ../shared",
        p.display()
    );
    p
}

/// PYTHONPATH under which `import omegaconf` works (installing it once if needed).
pub fn python_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let has = |pp: &str| {
            Command::new("python3")
                .args([
                    "-c",
                    "import omegaconf, yaml; assert omegaconf.__version__ == '2.3.0'",
                ])
                .env("PYTHONPATH", pp)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if has("") {
            return String::new();
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("easyr1-py");
        let dir = dir.display().to_string();
        if !has(&dir) {
            let st = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target", &dir])
                .arg("omegaconf==2.3.0")
                .status()
                .expect("python3 runs");
            assert!(st.success(), "pip install omegaconf==2.3.0 failed");
        }
        assert!(has(&dir), "omegaconf 2.3.0 not importable from {dir}");
        dir
    })
}
