//! `/openapi.json` is drawn from the same route table as the router.

use crate::helpers::{tempdir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_of_the_router() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    let doc = s.openapi().await.ok(200);
    let paths = doc["paths"].as_object().expect("paths");
    let routes = ordo::http::routes::route_list();
    assert!(routes.len() >= 14);
    for (method, path) in routes {
        let m = method.as_str().to_ascii_lowercase();
        let op = paths.get(path).and_then(|p| p.get(&m));
        assert!(
            op.is_some(),
            "{method} {path} is routed but not in /openapi.json"
        );
        // The edge's own refusals: 403 anywhere (a role; without tokens, Host or Origin),
        // 415 wherever a body may be sent.
        let responses = &op.unwrap()["responses"];
        assert!(responses.get("403").is_some(), "{method} {path} lacks 403");
        if ["post", "put", "patch"].contains(&m.as_str()) {
            assert!(responses.get("415").is_some(), "{method} {path} lacks 415");
        }
    }
    for schema in ["Problem", "OrderView", "SkuView", "CreateOrderBody"] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema}"
        );
    }
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
}
