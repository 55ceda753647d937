//! Turning u8 images into the float inputs models expect.

/// Pixel / 255, in [0, 1]: the reference models' input scaling.
pub fn scale_u8(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

/// (pixel / 255 - mean) / std, the usual per-dataset standardisation.
pub fn standardize_u8(pixels: &[u8], mean: f32, std: f32) -> Vec<f32> {
    pixels.iter().map(|&p| (f32::from(p) / 255.0 - mean) / std).collect()
}

/// Interleaved HWC u8 pixels (e.g. RGBRGB...) to planar CHW floats in [0, 1], the layout
/// convolutional models take.
pub fn hwc_to_chw_scaled(pixels: &[u8], channels: usize) -> Vec<f32> {
    if channels == 0 {
        return Vec::new();
    }
    let plane = pixels.len() / channels;
    let mut out = vec![0.0; plane * channels];
    for (i, px) in pixels.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + i] = f32::from(v) / 255.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling() {
        assert_eq!(scale_u8(&[0, 255, 51]), vec![0.0, 1.0, 0.2]);
        let s = standardize_u8(&[0, 255], 0.5, 0.5);
        assert_eq!(s, vec![-1.0, 1.0]);
    }

    #[test]
    fn hwc_to_chw() {
        // Two RGB pixels: (255, 0, 51) and (0, 255, 0).
        let chw = hwc_to_chw_scaled(&[255, 0, 51, 0, 255, 0], 3);
        assert_eq!(chw, vec![1.0, 0.0, 0.0, 1.0, 0.2, 0.0]);
    }
}
