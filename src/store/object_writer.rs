//! An `io::Write` sink for a put: for producers (an encoder, a tar writer, a network stream)
//! that push bytes instead of offering a reader.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::{PutOutcome, Store};
use crate::error::{Error, Result};

/// Bytes gathered before they are handed to the put, and how many such buffers may wait.
const BUFFER: usize = 1 << 20;
const BUFFERS_IN_FLIGHT: usize = 2;

/// Writes an object through [`io::Write`]; [`ObjectWriter::finish`] commits it. Dropped
/// without `finish` (or after a failed write), the put fails and the previous version stays
/// current.
///
/// The put runs on a thread of its own, fed through a bounded channel, so memory stays at a
/// few buffers whatever the object's size.
pub struct ObjectWriter {
    buffer: Vec<u8>,
    to_put: Option<mpsc::SyncSender<Message>>,
    put: Option<JoinHandle<Result<PutOutcome>>>,
}

enum Message {
    Bytes(Vec<u8>),
    /// The producer called `finish`: what came before is the whole object.
    End,
}

impl Store {
    /// A sink that stores what is written to it as `key` once [`ObjectWriter::finish`] is
    /// called (the same put as [`Store::put`]: verified, quorum-committed).
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`ObjectWriter::finish`] reports the put's own errors.
    pub fn writer(&self, key: &str) -> Result<ObjectWriter> {
        crate::key::validate(key)?;
        let (to_put, from_writer) = mpsc::sync_channel(BUFFERS_IN_FLIGHT);
        let store = self.clone();
        let key = key.to_owned();
        let put = std::thread::Builder::new()
            .name("shardguard-writer".into())
            .spawn(move || {
                let input = ChannelInput {
                    from_writer,
                    current: Vec::new(),
                    pos: 0,
                };
                store.put(&key, input)
            })
            .map_err(|source| Error::Input { source })?;
        Ok(ObjectWriter {
            buffer: Vec::with_capacity(BUFFER),
            to_put: Some(to_put),
            put: Some(put),
        })
    }
}

impl ObjectWriter {
    /// Commits the object: returns once the put is durable on a write quorum.
    ///
    /// # Errors
    /// The put's error ([`Store::put`]), or [`Error::Input`] if the put thread went away.
    pub fn finish(mut self) -> Result<PutOutcome> {
        let sent = self.send_buffer().and_then(|()| self.send(Message::End));
        self.to_put = None;
        let outcome = self.join();
        // A send fails only when the put stopped early; its own error says why.
        sent.map_err(|source| Error::Input { source }).and(outcome)
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(BUFFER));
        self.send(Message::Bytes(full))
    }

    fn send(&self, message: Message) -> io::Result<()> {
        let to_put = self
            .to_put
            .as_ref()
            .ok_or_else(|| io::Error::other("writer finished"))?;
        to_put
            .send(message)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the put stopped early"))
    }

    fn join(&mut self) -> Result<PutOutcome> {
        match self.put.take().map(JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            _ => Err(Error::Input {
                source: io::Error::other("the put thread panicked or is gone"),
            }),
        }
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BUFFER - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == BUFFER {
            self.send_buffer()?;
        }
        Ok(n)
    }

    /// Hands what is buffered to the put (it is committed only by `finish`).
    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Without `End` the put's input fails, so the put rolls back; waiting for it means a
        // dropped writer leaves nothing running behind.
        self.to_put = None;
        let _ = self.join();
    }
}

/// The put's side of the channel: a reader that fails unless the writer said `End`.
struct ChannelInput {
    from_writer: mpsc::Receiver<Message>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.from_writer.recv() {
                Ok(Message::Bytes(bytes)) => {
                    self.current = bytes;
                    self.pos = 0;
                }
                Ok(Message::End) => return Ok(0),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object writer was dropped without finish",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
