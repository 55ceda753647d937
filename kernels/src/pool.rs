//! The 2x2 stride-2 max pool of NCHW data: each output the max of four inputs, odd trailing
//! rows and columns dropped, as an unpadded ONNX MaxPool drops them.

/// The 2x2/s2 max pool of an NCHW tensor of `shape`: the data and the output shape.
pub fn pool<T: Copy + PartialOrd + Default>(input: &[T], shape: &[usize]) -> (Vec<T>, Vec<usize>) {
    let (oh, ow) = (shape[2] / 2, shape[3] / 2);
    let mut out = vec![T::default(); shape[0] * shape[1] * oh * ow];
    pool_into(input, shape, &mut out);
    (out, vec![shape[0], shape[1], oh, ow])
}

/// [`pool`] into `out`, which holds `shape[0] * shape[1] * (h / 2) * (w / 2)` elements.
pub fn pool_into<T: Copy + PartialOrd>(input: &[T], shape: &[usize], out: &mut [T]) {
    let (h, w) = (shape[2], shape[3]);
    let (oh, ow) = (h / 2, w / 2);
    let max = |a: T, b: T| if b > a { b } else { a };
    if oh * ow == 0 {
        return;
    }
    for (plane, dst) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, dst) in dst.chunks_exact_mut(ow).enumerate() {
            // Exact-length slices let the compiler drop bounds checks and vectorise.
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = max(max(top[2 * x], top[2 * x + 1]), max(bottom[2 * x], bottom[2 * x + 1]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_each_window_and_drops_odd_edges() {
        // One plane, 3x5: the last row and column have no full window.
        let input: Vec<f32> = vec![
            1., 5., 2., 0., 9., //
            3., 4., 8., 7., 9., //
            9., 9., 9., 9., 9.,
        ];
        let (out, shape) = pool(&input, &[1, 1, 3, 5]);
        assert_eq!(shape, [1, 1, 1, 2]);
        assert_eq!(out, [5., 8.]);
        let (out, _) = pool(&[0u8, 200, 3, 4, 255, 1, 2, 3], &[2, 1, 2, 2]);
        assert_eq!(out, [200, 255]);
    }
}
