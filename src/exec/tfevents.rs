//! TensorBoard event files, written by hand: TFRecord framing (length, masked CRC-32C of the
//! length, payload, masked CRC-32C of the payload) around `Event` protobufs with scalar
//! summaries. Only the fields TensorBoard needs for scalars are encoded:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```

use std::io::Write;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's CRC: rotated and offset so that CRCs of CRCs do not degenerate.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let c = CRC32C.checksum(bytes);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, ((field << 3) | 2) as u64);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One event: either the file-version header or a set of scalars at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub scalars: Vec<(String, f32)>,
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, (1 << 3) | 1);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        if self.step != 0 {
            put_varint(&mut out, 2 << 3);
            put_varint(&mut out, self.step as u64);
        }
        if let Some(v) = &self.file_version {
            put_bytes(&mut out, 3, v.as_bytes());
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for (tag, value) in &self.scalars {
                let mut val = Vec::new();
                put_bytes(&mut val, 1, tag.as_bytes());
                put_varint(&mut val, (2 << 3) | 5);
                val.extend_from_slice(&value.to_le_bytes());
                put_bytes(&mut summary, 1, &val);
            }
            put_bytes(&mut out, 5, &summary);
        }
        out
    }

    /// Decodes what `encode` writes (and skips fields it does not know).
    pub fn decode(bytes: &[u8]) -> Result<Event, String> {
        let mut ev = Event {
            wall_time: 0.0,
            step: 0,
            file_version: None,
            scalars: Vec::new(),
        };
        for field in Fields::new(bytes) {
            match field? {
                (1, Wire::Fixed64(v)) => ev.wall_time = f64::from_bits(v),
                (2, Wire::Varint(v)) => ev.step = v as i64,
                (3, Wire::Bytes(b)) => {
                    ev.file_version =
                        Some(String::from_utf8(b.to_vec()).map_err(|e| e.to_string())?)
                }
                (5, Wire::Bytes(summary)) => {
                    for value in Fields::new(summary) {
                        let (1, Wire::Bytes(value)) = value? else {
                            continue;
                        };
                        let mut tag = String::new();
                        let mut simple = None;
                        for f in Fields::new(value) {
                            match f? {
                                (1, Wire::Bytes(t)) => {
                                    tag =
                                        String::from_utf8(t.to_vec()).map_err(|e| e.to_string())?
                                }
                                (2, Wire::Fixed32(v)) => simple = Some(f32::from_bits(v)),
                                _ => {}
                            }
                        }
                        if let Some(v) = simple {
                            ev.scalars.push((tag, v));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(ev)
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated field".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = (|| {
            let key = self.varint()?;
            let field = (key >> 3) as u32;
            let wire = match key & 7 {
                0 => Wire::Varint(self.varint()?),
                1 => Wire::Fixed64(u64::from_le_bytes(
                    self.take(8)?.try_into().map_err(|_| "")?,
                )),
                2 => {
                    let n = self.varint()? as usize;
                    Wire::Bytes(self.take(n)?)
                }
                5 => Wire::Fixed32(u32::from_le_bytes(
                    self.take(4)?.try_into().map_err(|_| "")?,
                )),
                w => return Err(format!("unsupported wire type {w}")),
            };
            Ok((field, wire))
        })();
        if item.is_err() {
            self.buf = &[];
        }
        Some(item)
    }
}

/// Frames one record.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

/// Splits a TFRecord stream into payloads, checking both CRCs. A truncated tail (a crash
/// mid-write) ends the stream without error, as TensorBoard treats it.
pub fn read_records(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 12 {
        let len_bytes: [u8; 8] = rest[..8].try_into().map_err(|_| "short")?;
        let crc = u32::from_le_bytes(rest[8..12].try_into().map_err(|_| "short")?);
        if crc != masked_crc(&len_bytes) {
            return Err(format!("length CRC mismatch at record {}", out.len()));
        }
        let len = u64::from_le_bytes(len_bytes) as usize;
        if rest.len() < 12 + len + 4 {
            break;
        }
        let payload = &rest[12..12 + len];
        let crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().map_err(|_| "short")?);
        if crc != masked_crc(payload) {
            return Err(format!("data CRC mismatch at record {}", out.len()));
        }
        out.push(payload.to_vec());
        rest = &rest[16 + len..];
    }
    Ok(out)
}

/// An open event file. Every record is flushed, so a killed run keeps what it logged.
pub struct EventWriter {
    file: std::fs::File,
}

impl EventWriter {
    pub fn create(
        dir: &std::path::Path,
        wall_time: f64,
    ) -> std::io::Result<(Self, std::path::PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{}",
            wall_time as u64,
            super::rundir::sanitize(&host)
        ));
        let file = std::fs::File::create(&path)?;
        let mut w = EventWriter { file };
        w.write(&Event {
            wall_time,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            scalars: vec![],
        })?;
        Ok((w, path))
    }

    pub fn write(&mut self, ev: &Event) -> std::io::Result<()> {
        self.file.write_all(&frame(&ev.encode()))?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // CRC-32C("123456789") = 0xE3069283 (the catalogue's check value).
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        // Masked: rotr(0xE3069283, 15) = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn event_encoding_is_the_protobuf_wire_format() {
        let ev = Event {
            wall_time: 1.0,
            step: 3,
            file_version: None,
            scalars: vec![("r".into(), 0.5)],
        };
        // 09 <f64 1.0 LE> 10 03 2a 0a (summary, 10 bytes) 0a 08 (value, 8 bytes)
        // 0a 01 'r' (tag) 15 <f32 0.5 LE> (simple_value)
        let expected = [
            0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x03, 0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01,
            b'r', 0x15, 0, 0, 0, 0x3f,
        ];
        assert_eq!(ev.encode(), expected);
        assert_eq!(Event::decode(&expected).unwrap(), ev);
    }

    #[test]
    fn written_file_decodes_back_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = EventWriter::create(dir.path(), 1_700_000_000.0).unwrap();
        for step in 1..=3 {
            w.write(&Event {
                wall_time: 1_700_000_000.0 + step as f64,
                step,
                file_version: None,
                scalars: vec![("reward".into(), step as f32 / 4.0), ("kl".into(), 0.01)],
            })
            .unwrap();
        }
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        let recs = read_records(&bytes).unwrap();
        assert_eq!(recs.len(), 4);
        let first = Event::decode(&recs[0]).unwrap();
        assert_eq!(first.file_version.as_deref(), Some("brain.Event:2"));
        let last = Event::decode(&recs[3]).unwrap();
        assert_eq!(last.step, 3);
        assert_eq!(
            last.scalars,
            vec![("reward".to_string(), 0.75), ("kl".to_string(), 0.01)]
        );

        // A truncated tail is tolerated; a flipped byte is not.
        assert_eq!(read_records(&bytes[..bytes.len() - 3]).unwrap().len(), 3);
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 6] ^= 0xff;
        assert!(read_records(&bad).unwrap_err().contains("CRC"));
    }
}
