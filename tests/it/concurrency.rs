//! Many clients, one hot SKU: exactly the stock is sold, never more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;

use crate::support::{Client, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_on_one_hot_sku_never_oversell() {
    const CLIENTS: usize = 64;
    const STOCK: u64 = 1_000;
    let server = TestServer::start().await;
    server.client.receive("hot", STOCK).await;
    let held = Arc::new(AtomicU64::new(0));
    let sold_out = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let c = Client::new(&server.url);
        let (held, sold_out) = (held.clone(), sold_out.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            // Each client keeps buying until it is told the stock is gone.
            for n in 0.. {
                let order = format!("c{client}-o{n}");
                let r = c.reserve(&order, "hot", 1, &format!("{order}:reserve")).await;
                match (r.status, r.code()) {
                    (StatusCode::OK, _) => {
                        held.fetch_add(1, Ordering::Relaxed);
                        ids.push(r.body["reservationId"].as_str().unwrap().to_string());
                    }
                    (StatusCode::CONFLICT, "INSUFFICIENT_STOCK") => {
                        sold_out.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    other => panic!("unexpected reply {other:?}: {}", r.text),
                }
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    assert_eq!(held.load(Ordering::Relaxed), STOCK, "exactly the stock was held");
    assert_eq!(sold_out.load(Ordering::Relaxed), CLIENTS as u64);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, STOCK, "every hold has its own id");
    assert_eq!(server.client.levels("hot").await, (0, STOCK, 0));
    server.stop().await;
}
