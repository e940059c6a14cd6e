//! The QR code of an otpauth URI as inline SVG: the console's CSP allows no `data:` image, and
//! markup needs no second request.

use qrcodegen::{QrCode, QrCodeEcc};

/// An `<svg>` of the code, with a quiet zone of four modules. Only numbers go into it, never the
/// text itself, so it is safe to put in a page unescaped.
pub fn svg(text: &str) -> Option<String> {
    let code = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let size = code.size();
    let side = size + 8;
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if code.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + 4, y + 4));
            }
        }
    }
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" width="240" height="240" role="img" aria-label="QR code of the authenticator secret" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_otpauth_uri_becomes_an_svg_of_numbers_only() {
        let svg = super::svg("otpauth://totp/provisiond:%3Cscript%3E?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("otpauth") && !svg.contains("script"), "the text itself is not in the SVG");
        assert!(svg.matches('z').count() > 100, "modules drawn");
    }
}
