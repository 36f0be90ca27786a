//! The log writer: stderr, batched on the request threads.
//!
//! A shard thread (see `proxy::shards`) appends each formatted line to a
//! buffer of its own and writes the buffer in one `write` when it passes
//! [`FLUSH_AT`] bytes, and at least every [`FLUSH_EVERY`] from a task on the
//! shard's runtime: one system call for dozens of access-log lines instead
//! of one per request. Whole buffers are written under stderr's lock, so
//! lines from two threads never interleave. Other threads write at once.

use std::cell::RefCell;
use std::io::Write;
use std::time::Duration;

/// A shard's buffer is written once it holds this many bytes.
pub const FLUSH_AT: usize = 32 * 1024;
/// A shard's buffer is written at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

thread_local! {
    /// `Some` on a thread that batches its lines.
    static BUFFER: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Makes this thread batch its log lines until [`flush`] and
/// [`stop_batching`]; the thread must then call [`flush`] at least every
/// [`FLUSH_EVERY`].
pub fn batch_this_thread() {
    BUFFER.with(|b| *b.borrow_mut() = Some(Vec::with_capacity(FLUSH_AT * 2)));
}

/// Writes this thread's batched lines, if any.
pub fn flush() {
    BUFFER.with(|b| {
        if let Some(buf) = b.borrow_mut().as_mut() {
            write_out(buf);
        }
    });
}

/// Flushes and goes back to writing each line at once.
pub fn stop_batching() {
    flush();
    BUFFER.with(|b| *b.borrow_mut() = None);
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = std::io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// Has `line` append one whole line to a buffer, then writes it as the
/// [`Stderr`] writer would: into this thread's batch when it batches (no
/// copy), else at once.
pub fn with_line(line: impl FnOnce(&mut Vec<u8>)) {
    let mut line = Some(line);
    BUFFER.with(|b| {
        if let Some(buf) = b.borrow_mut().as_mut() {
            if let Some(l) = line.take() {
                l(buf);
            }
            if buf.len() >= FLUSH_AT {
                write_out(buf);
            }
        }
    });
    if let Some(l) = line {
        let mut buf = Vec::with_capacity(512);
        l(&mut buf);
        let _ = std::io::stderr().lock().write_all(&buf);
    }
}

/// The `tracing_subscriber` writer: stderr, batched on batching threads.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

impl Write for Stderr {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let batched = BUFFER.with(|b| match b.borrow_mut().as_mut() {
            Some(buf) => {
                buf.extend_from_slice(data);
                if buf.len() >= FLUSH_AT {
                    write_out(buf);
                }
                true
            }
            None => false,
        });
        if !batched {
            std::io::stderr().lock().write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batching_thread_keeps_lines_until_flushed() {
        std::thread::spawn(|| {
            batch_this_thread();
            Stderr.write_all(b"logging test\n").unwrap();
            let held = BUFFER.with(|b| b.borrow().as_ref().map(Vec::len));
            assert_eq!(held, Some(13));
            flush();
            let held = BUFFER.with(|b| b.borrow().as_ref().map(Vec::len));
            assert_eq!(held, Some(0));
            stop_batching();
            assert!(BUFFER.with(|b| b.borrow().is_none()));
        })
        .join()
        .unwrap();
    }
}
