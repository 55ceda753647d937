//! The incremental decoder: bytes in as they arrive, frames out.

use super::{Frame, HEADER_BYTES, PROTOCOL_VERSION, ProtocolError, ProtocolLimits, decode_body};

/// Turns a byte stream into frames, taking bytes as they arrive.
///
/// It buffers at most one frame: the header, then a body whose declared length has already
/// been checked against [`ProtocolLimits::max_frame_bytes`]. The buffer grows with the bytes
/// actually received, never ahead of them, so a peer that declares a large frame and then
/// stalls costs only what it sent. After an error the decoder refuses further input: its
/// position in the stream is no longer known.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: ProtocolLimits,
    header: [u8; HEADER_BYTES],
    header_len: usize,
    /// Declared body length, once the header is complete.
    body_len: Option<usize>,
    body: Vec<u8>,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: ProtocolLimits) -> FrameDecoder {
        FrameDecoder {
            limits,
            header: [0; HEADER_BYTES],
            header_len: 0,
            body_len: None,
            body: Vec::new(),
            failed: false,
        }
    }

    /// Consumes bytes from the front of `input` and returns the next frame once it is
    /// complete; `Ok(None)` means all of `input` was consumed and more bytes are needed.
    /// Bytes after a complete frame are left in `input` for the next call.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, ProtocolError> {
        if self.failed {
            return Err(ProtocolError::Poisoned);
        }
        let result = self.step(input);
        if result.is_err() {
            self.failed = true;
            self.body = Vec::new();
        }
        result
    }

    /// Bytes of a partial frame held; 0 between frames. A stream that ends while this is
    /// non-zero was cut short.
    pub fn buffered(&self) -> usize {
        self.header_len + self.body.len()
    }

    /// Fails with [`ProtocolError::Truncated`] if the stream ended inside a frame.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match self.buffered() {
            0 => Ok(()),
            have => Err(ProtocolError::Truncated { have }),
        }
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let body_len = match self.body_len {
            Some(len) => len,
            None => {
                let take = (HEADER_BYTES - self.header_len).min(input.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
                self.header_len += take;
                *input = &input[take..];
                // The version is checked as soon as it arrives, before the length is trusted.
                if self.header_len >= 1 && self.header[0] != PROTOCOL_VERSION {
                    return Err(ProtocolError::UnsupportedVersion { got: self.header[0] });
                }
                if self.header_len < HEADER_BYTES {
                    return Ok(None);
                }
                let declared =
                    u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                let len = usize::try_from(declared)
                    .ok()
                    .filter(|&len| len <= self.limits.max_frame_bytes)
                    .ok_or(ProtocolError::FrameTooLarge {
                        len: declared.into(),
                        max: self.limits.max_frame_bytes,
                    })?;
                self.body_len = Some(len);
                len
            }
        };
        let take = (body_len - self.body.len()).min(input.len());
        let needed = self.body.len() + take;
        if needed > self.body.capacity() {
            // Amortised growth, capped at the declared (already checked) length.
            let target = needed.max(self.body.capacity().saturating_mul(2)).min(body_len);
            self.body.reserve_exact(target - self.body.len());
        }
        self.body.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if self.body.len() < body_len {
            return Ok(None);
        }
        let frame = decode_body(&self.body);
        self.header_len = 0;
        self.body_len = None;
        self.body.clear();
        frame.map(Some)
    }
}
