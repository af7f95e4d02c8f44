//! Request bodies for the bench and the digest microbenchmark (`wire/examples/digest_speed.rs`
//! includes this file by path, so it uses nothing but `std`).

/// A JSON document of exactly `size` bytes that looks like a payment batch (objects, strings,
/// integers and decimals, so canonicalisation has real work), I-JSON throughout.
pub fn payment_batch(size: usize) -> Vec<u8> {
    let head = r#"{"payment":{"amount":{"currency":"EUR","value":"1250.00"},"creditor":{"iban":"DE89370400440532013000","name":"Partner GmbH"},"reference":"INV-2026-0042"},"items":["#;
    let mut s = String::from(head);
    let mut i = 0u32;
    loop {
        let item = format!(
            r#"{}{{"sku":"SKU-{i:06}","qty":{},"price":{}.{:02},"note":"line {i} of the reconciliation batch","tags":["b2b","net30"]}}"#,
            if i == 0 { "" } else { "," },
            1 + i % 7,
            10 + i % 90,
            (i * 37) % 100
        );
        // Leave room for `],"pad":""}` and some padding.
        if s.len() + item.len() + 16 > size {
            break;
        }
        s.push_str(&item);
        i += 1;
    }
    s.push_str(r#"],"pad":""#);
    while s.len() + 2 < size {
        s.push('x');
    }
    s.push_str("\"}");
    assert_eq!(s.len(), size, "body generator");
    s.into_bytes()
}
