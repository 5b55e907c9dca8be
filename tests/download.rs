//! The download step against a local loopback server: a good file lands intact, while a
//! corrupted file, a truncated transfer and a server error each fail with a clear message and
//! leave no file (partial or otherwise) behind.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread;

use constnet::data::download::download_verified;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Serves `responses` (raw HTTP bytes) to the next connections on 127.0.0.1, one each, then stops.
fn serve(responses: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        for response in responses {
            let (mut stream, _) = listener.accept().expect("a connection");
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{address}/file.gz")
}

fn ok_response(body: &[u8], declared_length: usize) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {declared_length}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh empty directory, removed with everything in it when the returned guard is dropped.
fn empty_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("constnet-download-{name}-"))
        .tempdir()
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const BODY: &[u8] = b"the bytes of a data file, long enough to be split in two";

#[test]
fn a_good_file_lands_intact() {
    let dir = empty_dir("good");
    let url = serve(vec![ok_response(BODY, BODY.len())]);
    download_verified(&url, dir.path().join("file.gz"), &sha256(BODY)).unwrap();
    assert_eq!(std::fs::read(dir.path().join("file.gz")).unwrap(), BODY);
    assert_eq!(files_in(dir.path()), ["file.gz"]);
}

#[test]
fn a_corrupted_file_is_rejected_and_removed() {
    let dir = empty_dir("corrupt");
    let mut corrupted = BODY.to_vec();
    corrupted[3] ^= 0x20;
    let url = serve(vec![ok_response(&corrupted, corrupted.len())]);
    let error = download_verified(&url, dir.path().join("file.gz"), &sha256(BODY))
        .unwrap_err()
        .to_string();
    assert!(error.contains("file.gz from http://127.0.0.1"), "{error}");
    assert!(
        error.contains(&format!(
            "have SHA-256 {}, not the expected {}",
            sha256(&corrupted),
            sha256(BODY)
        )),
        "{error}"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_truncated_transfer_is_rejected_and_removed() {
    let dir = empty_dir("truncated");
    let url = serve(vec![ok_response(&BODY[..20], BODY.len())]);
    let error = download_verified(&url, dir.path().join("file.gz"), &sha256(BODY))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("the transfer broke off after 20 bytes"),
        "{error}"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_server_error_is_reported_and_nothing_written() {
    let dir = empty_dir("error");
    let response =
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let url = serve(vec![response.to_vec()]);
    let error = download_verified(&url, dir.path().join("file.gz"), &sha256(BODY))
        .unwrap_err()
        .to_string();
    assert!(error.contains("the server answered HTTP 500"), "{error}");
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn an_existing_file_is_replaced_only_by_a_verified_one() {
    let dir = empty_dir("replace");
    let dest = dir.path().join("file.gz");
    std::fs::write(&dest, b"old").unwrap();
    let url = serve(vec![ok_response(&BODY[..10], BODY.len())]);
    assert!(download_verified(&url, &dest, &sha256(BODY)).is_err());
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"old",
        "a failed download keeps the old file"
    );
}
