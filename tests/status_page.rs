//! The live status page (`GET /` on the admin address) in a real headless Chromium: it
//! shows a rollout mid-way as the controller has it, asks for the token, and its pause
//! button (after confirmation) pauses the rollout.

mod support;

use std::time::Duration;

use support::*;

const TOKEN: &str = "page-test-token-5d1c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_rollout_and_pauses_it_from_a_real_browser() {
    let Some(program) = chromium() else { return };
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let rollout = "    rollout:\n      steps:\n        - weight: 25%\n          hold: 1h\n        - weight: 100%\n      analysis:\n        interval: 1s\n        window: 1m\n        min_requests: 5\n        max_error_rate: 50%\n    hooks:\n      audit:\n        on: [started, paused]\n        exec: [\"true\"]\n";
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", rollout).replacen(
        "admin:\n  addr: \"127.0.0.1:0\"\n",
        "admin:\n  addr: \"127.0.0.1:0\"\n  token_file: admin.token\n",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let proxy = spawn_proxy_in(dir, &yaml, false).await;
    wait_for(
        &proxy,
        "the rollout at 25%",
        Duration::from_secs(10),
        || {
            let s = service(&proxy);
            s.state == "progressing" && s.weight == 25.0
        },
    )
    .await;
    // Traffic, so that analysis checks have numbers for the page to draw.
    for _ in 0..40 {
        send(proxy.addr, get("app.test", "/")).await;
    }
    wait_for(
        &proxy,
        "a conclusive check",
        Duration::from_secs(10),
        || {
            service(&proxy)
                .last_check
                .is_some_and(|c| c.new.requests >= 5)
        },
    )
    .await;

    let page = proxy.admin_url("/");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let (browser_state, check_shown) = tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || -> (Browser, bool) {
            let mut browser = Browser::start(&program);
            browser.navigate(&page);
            let within = Duration::from_secs(15);
            // Without the token the page shows no data, and says why.
            browser
                .eval_until(within, "document.getElementById('banner').textContent.includes('token')")
                .unwrap_or_else(|v| panic!("no token prompt: {v}"));
            assert_eq!(
                browser.eval("document.querySelectorAll('[data-service]').length"),
                0
            );
            browser.eval("document.getElementById('token').focus()");
            browser.type_text(TOKEN);
            browser.eval("document.querySelector('#tokenform button').click()");
            let field = |name: &str| {
                format!("(document.querySelector('[data-service=api] [data-field={name}]') || {{}}).textContent")
            };
            browser
                .eval_until(
                    within,
                    &format!("{} === 'progressing' && {} === '25%'", field("state"), field("weight")),
                )
                .unwrap_or_else(|v| panic!("page never showed progressing at 25%: {v}"));
            assert_eq!(browser.eval(&field("step")), "step 1/2: weight 25%, hold 1h");
            let hold = browser.eval(&field("hold"));
            assert!(
                hold.as_str().is_some_and(|h| h.starts_with("hold left 59m") || h.starts_with("hold left 1h0m")),
                "{hold}"
            );
            // The check's numbers and a drawn sparkline (a line or, after one check, a dot).
            let check_shown = browser
                .eval_until(within, "document.querySelectorAll('[data-service=api] svg.spark polyline, [data-service=api] svg.spark circle').length > 0")
                .is_ok();
            browser.screenshot(&shot);
            // Pause asks first: nothing is sent until the confirmation.
            browser.eval("document.querySelector('[data-service=api] button[data-action=pause]').click()");
            assert_eq!(browser.eval("document.getElementById('confirm').open"), true);
            assert_eq!(
                browser.eval("document.getElementById('confirm-yes').textContent"),
                "Yes, pause api"
            );
            (browser, check_shown)
        }
    })
    .await
    .unwrap();
    let mut browser = browser_state;
    assert!(check_shown, "the page drew no sparkline of the checks");
    // Still progressing: the dialog alone changed nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service(&proxy).state, "progressing");

    let paused_shot = shot.with_file_name("status-page-paused.png");
    let browser = tokio::task::spawn_blocking(move || {
        browser.eval("document.getElementById('confirm-yes').click()");
        browser
            .eval_until(
                Duration::from_secs(15),
                "(document.querySelector('[data-service=api] [data-field=state]') || {}).textContent === 'paused'",
            )
            .unwrap_or_else(|v| panic!("page never showed paused: {v}"));
        // The hook fired on `paused` appears with its outcome.
        browser
            .eval_until(
                Duration::from_secs(15),
                "[...document.querySelectorAll('[data-service=api] [data-hook=audit] td')].some(td => td.textContent.startsWith('paused'))",
            )
            .unwrap_or_else(|v| panic!("the paused hook run never showed: {v}"));
        browser.screenshot(&paused_shot);
        browser
    })
    .await
    .unwrap();
    drop(browser);
    // The page's truth is the controller's.
    let status = service(&proxy);
    assert_eq!(status.state, "paused");
    assert_eq!(status.weight, 25.0);
    eprintln!("screenshots: {}", shot.display());
}

#[tokio::test]
async fn the_page_is_public_self_contained_and_locked_down() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", "").replacen(
        "admin:\n  addr: \"127.0.0.1:0\"\n",
        "admin:\n  addr: \"127.0.0.1:0\"\n  token_file: admin.token\n",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let proxy = spawn_proxy_in(dir, &yaml, false).await;
    let got = admin_get(proxy.app.admin_addr, "/").await;
    assert_eq!(got.status, 200);
    let header = |name: &str| {
        got.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    for external in ["<script src", "<link", "@import", "url(http", "fonts.g"] {
        assert!(!got.body.contains(external), "the page loads {external}");
    }
    assert!(!got.body.contains(TOKEN));
    // The data itself still needs the token.
    assert_eq!(admin_get(proxy.app.admin_addr, "/status").await.status, 401);
    // Only GET is public: anything else on / needs the token like the rest of the API.
    assert_eq!(admin_post(proxy.app.admin_addr, "/").await.status, 401);
}
