//! The `/souk/sync/1` request-response codec: one unsigned-varint length prefix, then the
//! protobuf message (`souk.v1.SyncRequest` / `souk.v1.SyncResponse`). Lengths are checked before
//! anything is allocated; bytes in and out are counted for the status page and benchmarks.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use prost::Message;
use souk_protocol::pb;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/souk/sync/1");
/// Largest request accepted.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Bytes moved by the sync protocol (payload and length prefixes; not noise/yamux framing).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes written.
    pub sent: AtomicU64,
    /// Bytes read.
    pub received: AtomicU64,
}

/// The codec; clones share one [`Traffic`] counter.
#[derive(Debug, Clone, Default)]
pub struct SyncCodec {
    /// What this node's sync streams moved in all.
    pub traffic: Arc<Traffic>,
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let mut length: u64 = 0;
    let mut shift = 0;
    loop {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        length |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "length prefix too long",
            ));
        }
    }
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {length} bytes exceeds the limit of {limit}"),
        ));
    }
    // Grows with what actually arrives: a peer announcing 1 MiB and sending nothing costs
    // nothing.
    let mut buffer = Vec::new();
    io.take(length as u64).read_to_end(&mut buffer).await?;
    if buffer.len() != length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended inside a message",
        ));
    }
    Ok(buffer)
}

fn prefix(length: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    let mut value = length;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Bytes `message` takes on a stream: its length prefix and its encoding.
#[must_use]
pub fn framed_len(message: &impl Message) -> u64 {
    let body = message.encoded_len();
    (prefix(body).len() + body) as u64
}

impl SyncCodec {
    async fn write<T: AsyncWrite + Unpin + Send, M: Message>(
        &self,
        io: &mut T,
        message: &M,
        limit: usize,
    ) -> io::Result<()> {
        let body = message.encode_to_vec();
        if body.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {} bytes exceeds the limit of {limit}",
                    body.len()
                ),
            ));
        }
        let head = prefix(body.len());
        io.write_all(&head).await?;
        io.write_all(&body).await?;
        io.flush().await?;
        self.traffic
            .sent
            .fetch_add((head.len() + body.len()) as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn read<T: AsyncRead + Unpin + Send, M: Message + Default>(
        &self,
        io: &mut T,
        limit: usize,
    ) -> io::Result<M> {
        let body = read_frame(io, limit).await?;
        self.traffic.received.fetch_add(
            (prefix(body.len()).len() + body.len()) as u64,
            Ordering::Relaxed,
        );
        M::decode(body.as_slice()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = pb::SyncRequest;
    type Response = pb::SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io, MAX_REQUEST_BYTES).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io, MAX_RESPONSE_BYTES).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write(io, &request, MAX_REQUEST_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Self::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write(io, &response, MAX_RESPONSE_BYTES).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    #[tokio::test]
    async fn a_request_round_trips_and_is_counted() {
        let mut codec = SyncCodec::default();
        let request = pb::SyncRequest {
            request: Some(pb::sync_request::Request::Fetch(pb::Fetch {
                ids: vec![vec![7; 32]; 300],
            })),
        };
        let mut wire = Vec::new();
        codec
            .write_request(
                &PROTOCOL,
                &mut futures::io::Cursor::new(&mut wire),
                request.clone(),
            )
            .await
            .expect("write");
        let back = codec
            .read_request(&PROTOCOL, &mut futures::io::Cursor::new(&wire))
            .await
            .expect("read");
        assert_eq!(back, request);
        assert_eq!(
            codec.traffic.sent.load(Ordering::Relaxed),
            wire.len() as u64
        );
        assert_eq!(
            codec.traffic.received.load(Ordering::Relaxed),
            wire.len() as u64
        );
    }

    #[tokio::test]
    async fn an_oversize_length_is_refused_before_reading_the_body() {
        let mut codec = SyncCodec::default();
        let mut wire = prefix(MAX_REQUEST_BYTES + 1);
        wire.extend([0u8; 16]);
        let error = codec
            .read_request(&PROTOCOL, &mut futures::io::Cursor::new(&wire))
            .await
            .expect_err("too large");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let mut codec = SyncCodec::default();
        let wire = [0xffu8; 12];
        assert!(
            codec
                .read_request(&PROTOCOL, &mut futures::io::Cursor::new(&wire))
                .await
                .is_err()
        );
        let wire = [5u8, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(
            codec
                .read_response(&PROTOCOL, &mut futures::io::Cursor::new(&wire))
                .await
                .is_err()
        );
    }
}
