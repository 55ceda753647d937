//! The font the charts (`calibrate --plot`, `demo --report`) are laid out with: plotters
//! measures text with a TrueType font even when it writes SVG, whose text the viewer then
//! draws with its own `sans-serif`.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name the charts use; registered under it by [`register`].
pub const FAMILY: &str = "sans-serif";

/// Where Debian's font packages put a usable font.
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the first font found as [`FAMILY`], once per process; an error says which
/// package to install.
pub fn register() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let Some(bytes) = FONTS.iter().find_map(|f| std::fs::read(f).ok()) else {
                return Err(format!(
                    "no TrueType font found at {}; install one (Debian: apt-get install fonts-dejavu-core, \
                     or run tools/setup.sh)",
                    FONTS.join(" or ")
                ));
            };
            // plotters keeps fonts for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| "the font file is not a usable TrueType font".to_owned())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
