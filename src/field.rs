//! The field syntax both HTTP versions share (RFC 9110, 5.6.2 and 8.6):
//! tokens and Content-Length values. The HTTP/1.1 path (`proxy::h1`) and
//! the HTTP/2 server (`http2::server`) read requests with these, so the two
//! cannot disagree about what a valid length or name is.

/// A `tchar`: a byte a token may hold.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A token: one or more `tchar`s (a method, or a field name).
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

/// One Content-Length value as it was sent: digits only, no sign, no
/// space, no overflow. `None` for anything else.
pub fn content_length(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    bytes
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token(b"GET"));
        assert!(is_token(b"x-custom_name.v2~!"));
        for bad in [&b""[..], b"a b", b"a:b", b"caf\xc3\xa9", b"a\tb", b"(x)", b"a\"b"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"0042"), Some(42));
        assert_eq!(content_length(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1,1",
            b"0x10",
            b"18446744073709551616",
            b"00000000000000000000",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }
}
