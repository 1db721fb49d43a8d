//! The HTTP judge (`--reward http://HOST:PORT/PATH`) against a server on 127.0.0.1 that the test
//! runs: the request it gets (items, bearer token), the scores it returns, its retries of
//! 5xx answers, and an error naming what failed for each way a judge can fail.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rrhf::rewards::http::HttpJudge;
use rrhf::rewards::{Reward, Scoring};
use serde_json::{Value, json};

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// What the server answers to the n-th request (from 0): status, body and a delay first.
type Answer = dyn Fn(usize, &Seen) -> (u16, String, Duration) + Send + Sync;

/// Serves on a free port until the test ends; the requests it saw, in order.
fn serve(answer: Box<Answer>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/score", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let count = AtomicUsize::new(0);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut length, mut authorization) = (0, None);
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request = Seen {
                path,
                authorization,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            };
            log.lock().unwrap().push(request.clone());
            let (status, text, delay) = answer(count.fetch_add(1, Ordering::SeqCst), &request);
            std::thread::sleep(delay);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

/// Scores each item by its response's length in characters.
fn lengths(_: usize, seen: &Seen) -> (u16, String, Duration) {
    let scores: Vec<usize> = seen.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["response"].as_str().unwrap().chars().count())
        .collect();
    (200, json!({ "scores": scores }).to_string(), Duration::ZERO)
}

const ITEMS: [Scoring<'static>; 2] = [
    Scoring {
        query: "q1",
        response: "abc",
        messages: None,
    },
    Scoring {
        query: "q2",
        response: "hello",
        messages: None,
    },
];

fn judge(url: &str, timeout_secs: f64) -> HttpJudge {
    HttpJudge::new(url, None, Duration::from_secs_f64(timeout_secs)).unwrap()
}

#[test]
fn the_judge_posts_the_items_with_the_token_and_reads_the_scores() {
    let (url, seen) = serve(Box::new(lengths));
    // SAFETY: this test binary's tests set no other variable and read this one only here.
    unsafe { std::env::set_var("RRHF_TEST_JUDGE_TOKEN", "s3cret") };
    let mut judge =
        HttpJudge::new(&url, Some("RRHF_TEST_JUDGE_TOKEN"), Duration::from_secs(10)).unwrap();
    assert_eq!(judge.score(&ITEMS).unwrap(), [3.0, 5.0]);
    let request = seen.lock().unwrap()[0].clone();
    assert_eq!(request.path, "/score");
    assert_eq!(request.authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(
        request.body,
        json!({"items": [{"query": "q1", "response": "abc"}, {"query": "q2", "response": "hello"}]})
    );

    let missing = HttpJudge::new(&url, Some("RRHF_TEST_NO_SUCH_VAR"), Duration::from_secs(1));
    let err = format!("{:#}", missing.err().unwrap());
    assert!(
        err.contains("RRHF_TEST_NO_SUCH_VAR") && err.contains("not set"),
        "{err}"
    );
}

#[test]
fn server_errors_are_retried_and_other_failures_are_named() {
    // Two 503s, then an answer: the third try scores.
    let (url, seen) = serve(Box::new(|n, s| {
        if n < 2 {
            (503, "busy".into(), Duration::ZERO)
        } else {
            lengths(n, s)
        }
    }));
    assert_eq!(judge(&url, 10.0).score(&ITEMS).unwrap(), [3.0, 5.0]);
    assert_eq!(seen.lock().unwrap().len(), 3);

    let failure = |answer: Box<Answer>, timeout: f64| {
        let (url, seen) = serve(answer);
        let err = format!("{:#}", judge(&url, timeout).score(&ITEMS).unwrap_err());
        let tries = seen.lock().unwrap().len();
        (err, tries)
    };
    let (err, tries) = failure(Box::new(|_, _| (500, "boom".into(), Duration::ZERO)), 10.0);
    assert!(
        err.contains("3 tries failed") && err.contains("HTTP 500: \"boom\""),
        "{err}"
    );
    assert_eq!(tries, 3);
    let (err, tries) = failure(Box::new(|_, _| (401, "who?".into(), Duration::ZERO)), 10.0);
    assert!(err.contains("HTTP 401 (not retried)"), "{err}");
    assert_eq!(tries, 1);
    let (err, _) = failure(
        Box::new(|_, _| (200, "<html>".into(), Duration::ZERO)),
        10.0,
    );
    assert!(err.contains("not JSON: \"<html>\""), "{err}");
    let (err, _) = failure(
        Box::new(|_, _| (200, "{\"s\": 1}".into(), Duration::ZERO)),
        10.0,
    );
    assert!(err.contains("no `scores` array"), "{err}");
    let (err, _) = failure(
        Box::new(|_, _| (200, "{\"scores\": [1]}".into(), Duration::ZERO)),
        10.0,
    );
    assert!(err.contains("1 scores for 2 items"), "{err}");
    let (err, _) = failure(
        Box::new(|_, _| (200, "{\"scores\": [1, \"x\"]}".into(), Duration::ZERO)),
        10.0,
    );
    assert!(
        err.contains("score 1 of the answer is \"x\", not a finite number"),
        "{err}"
    );
    // The server answers one request at a time, late: the count it saw lags behind the tries.
    let (err, _) = failure(
        Box::new(|_, _| (200, "{\"scores\": [1, 2]}".into(), Duration::from_secs(3))),
        0.5,
    );
    assert!(
        err.contains("try 3: no answer within the timeout of 0.5 s")
            || err.contains("try 3: the answer did not arrive within the timeout"),
        "{err}"
    );

    // Nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = format!(
        "{:#}",
        judge(&format!("http://127.0.0.1:{port}/x"), 5.0)
            .score(&ITEMS)
            .unwrap_err()
    );
    assert!(
        err.contains("3 tries failed") && err.contains("cannot connect"),
        "{err}"
    );
}

/// `rrhf score --reward http://...` scores a sampled file through the local server.
#[test]
fn rrhf_score_scores_a_sampled_file_through_the_judge() {
    let (url, _) = serve(Box::new(lengths));
    let dir = common::scratch("http-judge-score");
    let input = dir.join("sampled.jsonl");
    std::fs::write(
        &input,
        "{\"query\": \"Hi\", \"responses\": [\"a\", \"abcd\"]}\n\
         {\"query\": \"Yo\", \"responses\": [\"xyz\"]}\n",
    )
    .unwrap();
    let out = dir.join("scored.jsonl");
    let run = common::rrhf([
        "score",
        "--reward",
        &url,
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let scores: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["scores"].clone())
        .collect();
    assert_eq!(scores, [json!([1.0, 4.0]), json!([3.0])]);

    let bad = common::rrhf([
        "score",
        "--reward",
        "http:///nohost",
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected http://HOST[:PORT]/PATH"));
}
