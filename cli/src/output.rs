//! Human-readable output: prices, short forms, tables and detail views. Pure functions that
//! return strings, so they are tested without a terminal.

use std::fmt::Write as _;

use souk_mobile_core::{
    Condition, ListingDraft, Price, SearchPage, ShippingOption, VerifiedListing, VerifiedStore,
};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// An amount in base units shown in major units with its currency: `85.00 EUR`,
/// `0.00125000 BTC`, `1500 JPY`.
pub fn format_amount(amount: u64, divisibility: u32, currency: &str) -> String {
    match 10u64.checked_pow(divisibility) {
        Some(1) => format!("{amount} {currency}"),
        Some(unit) => format!(
            "{}.{:0width$} {currency}",
            amount / unit,
            amount % unit,
            width = divisibility as usize
        ),
        // Validation caps divisibility at 8; anything else is shown as it is.
        None => format!("{amount} (base units, divisibility {divisibility}) {currency}"),
    }
}

/// [`format_amount`] of a price.
pub fn format_price(price: &Price) -> String {
    format_amount(price.amount, price.divisibility, &price.currency)
}

/// `souk1xr8s…5jwel`: enough to tell stores apart at a glance.
pub fn short_address(address: &str) -> String {
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 16 {
        return address.to_owned();
    }
    let head: String = chars[..9].iter().collect();
    let tail: String = chars[chars.len() - 5..].iter().collect();
    format!("{head}…{tail}")
}

/// The first 12 hex digits of an object id.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// `text` cut to at most `width` columns, with `…` when cut; line breaks become spaces.
pub fn truncate(text: &str, width: usize) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.width() <= width {
        return text;
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left.
    Right,
}

/// A plain text table: a header row, then rows, columns two spaces apart.
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.width()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|(h, _)| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, ((_, align), cell)) in headers.iter().zip(row).enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(cell.width()));
            if i > 0 {
                line.push_str("  ");
            }
            match align {
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
                Align::Right => {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An argument quoted for a POSIX shell, only when it needs it.
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%".contains(&b));
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn format_time(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX / 2);
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// A condition in words.
pub fn condition_label(condition: Condition) -> &'static str {
    match condition {
        Condition::New => "new",
        Condition::UsedLikeNew => "used, like new",
        Condition::UsedGood => "used, good",
        Condition::UsedFair => "used, fair",
        Condition::Refurbished => "refurbished",
        Condition::ForParts => "for parts or repair",
    }
}

/// Countries a listing ships to, in order, without repeats.
pub fn ships_to(shipping: &[ShippingOption]) -> Vec<String> {
    let mut regions: Vec<String> = Vec::new();
    for region in shipping.iter().flat_map(|s| &s.regions) {
        if !regions.contains(region) {
            regions.push(region.clone());
        }
    }
    regions
}

/// The search results as a table, or a line saying there are none.
pub fn search_table(page: &SearchPage) -> String {
    if page.hits.is_empty() {
        return "No listings match.\n".into();
    }
    let rows: Vec<Vec<String>> = page
        .hits
        .iter()
        .map(|hit| {
            vec![
                format_price(&hit.listing.price),
                truncate(&hit.listing.title, 44),
                hit.listing.listing_type.as_str().to_owned(),
                short_address(&hit.seller),
                short_id(&hit.id),
            ]
        })
        .collect();
    table(
        &[
            ("PRICE", Align::Right),
            ("TITLE", Align::Left),
            ("TYPE", Align::Left),
            ("SELLER", Align::Left),
            ("ID", Align::Left),
        ],
        &rows,
    )
}

fn field(out: &mut String, name: &str, value: &str) {
    if !value.is_empty() {
        let _ = writeln!(out, "  {name:<11} {value}");
    }
}

fn indented(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "  {line}");
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn shipping_lines(listing: &ListingDraft) -> Vec<String> {
    listing
        .shipping
        .iter()
        .flat_map(|option| {
            option.services.iter().map(move |service| {
                let mut line = format!(
                    "{} → {}: {} {}",
                    option.name,
                    option.regions.join(", "),
                    service.name,
                    format_amount(
                        service.price,
                        listing.price.divisibility,
                        &listing.price.currency
                    )
                );
                if !service.estimated_delivery.is_empty() {
                    let _ = write!(line, ", {}", service.estimated_delivery);
                }
                line
            })
        })
        .collect()
}

/// The detail view of a verified listing.
pub fn listing_detail(v: &VerifiedListing) -> String {
    let l = &v.listing;
    let mut out = String::new();
    let _ = writeln!(out, "{}", l.title);
    let _ = writeln!(out, "{}", "─".repeat(l.title.width().clamp(8, 72)));
    field(&mut out, "price", &format_price(&l.price));
    field(&mut out, "seller", &v.seller);
    field(&mut out, "type", l.listing_type.as_str());
    if let Some(c) = l.condition {
        field(&mut out, "condition", condition_label(c));
    }
    field(&mut out, "category", &l.category);
    field(&mut out, "tags", &l.tags.join(", "));
    field(&mut out, "ships to", &ships_to(&l.shipping).join(", "));
    for (i, line) in shipping_lines(l).iter().enumerate() {
        field(&mut out, if i == 0 { "shipping" } else { "" }, line);
    }
    if !l.images.is_empty() {
        field(
            &mut out,
            "images",
            &format!("{} (first: {})", l.images.len(), l.images[0].url),
        );
    }
    if !l.accepted_moderators.is_empty() {
        field(
            &mut out,
            "moderators",
            &l.accepted_moderators
                .iter()
                .map(|m| short_address(m))
                .collect::<Vec<_>>()
                .join(", "),
        );
    } else {
        field(&mut out, "payment", "direct (no moderator)");
    }
    if l.nsfw {
        field(&mut out, "nsfw", "yes");
    }
    field(&mut out, "slug", &l.slug);
    field(&mut out, "id", &v.id);
    field(&mut out, "signed", &format_time(v.created_at));
    if l.expires_at != 0 {
        field(&mut out, "expires", &format_time(l.expires_at));
    }
    if !l.description.trim().is_empty() {
        out.push('\n');
        indented(&mut out, l.description.trim_end());
    }
    for (title, text) in [("Refund policy", &l.refund_policy), ("Terms", &l.terms)] {
        if !text.trim().is_empty() {
            let _ = writeln!(out, "\n  {title}:");
            indented(&mut out, &indent(text.trim_end()));
        }
    }
    out.push('\n');
    if v.current {
        out.push_str("✓ signature verified on this machine\n");
    } else {
        out.push_str(
            "✓ signature verified on this machine (an old version: it was replaced or withdrawn)\n",
        );
    }
    out
}

/// The detail view of a verified store profile.
pub fn store_detail(s: &VerifiedStore) -> String {
    let p = &s.profile;
    let mut out = String::new();
    let _ = writeln!(out, "{}", p.store_name);
    let _ = writeln!(out, "{}", "─".repeat(p.store_name.width().clamp(8, 72)));
    field(&mut out, "address", &s.seller);
    field(&mut out, "handle", &p.handle);
    if let Some(loc) = &p.location {
        let place: Vec<&str> = [&loc.city, &loc.region, &loc.country]
            .into_iter()
            .map(String::as_str)
            .filter(|x| !x.is_empty())
            .collect();
        field(&mut out, "location", &place.join(", "));
    }
    field(&mut out, "currencies", &p.accepted_currencies.join(", "));
    field(&mut out, "inbox", &p.inbox_servers.join(", "));
    for (i, c) in p.contacts.iter().enumerate() {
        field(
            &mut out,
            if i == 0 { "contact" } else { "" },
            &format!("{}: {}", c.kind, c.value),
        );
    }
    let ratings = if s.rating_count == 0 {
        "none yet".to_owned()
    } else {
        format!(
            "{:.1} / 5 from {} (as the server counts them)",
            s.rating_average, s.rating_count
        )
    };
    field(&mut out, "ratings", &ratings);
    if p.moderator.is_some() {
        field(&mut out, "moderator", "offers dispute moderation");
    }
    field(&mut out, "id", &s.id);
    field(&mut out, "signed", &format_time(s.created_at));
    if !p.about.trim().is_empty() {
        out.push('\n');
        indented(&mut out, p.about.trim_end());
    }
    out.push_str("\n✓ signature verified on this machine\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(format_amount(8500, 2, "EUR"), "85.00 EUR");
        assert_eq!(format_amount(5, 2, "EUR"), "0.05 EUR");
        assert_eq!(format_amount(125_000, 8, "BTC"), "0.00125000 BTC");
        assert_eq!(
            format_amount(2_100_000_000_000_000, 8, "BTC"),
            "21000000.00000000 BTC"
        );
        assert_eq!(format_amount(1500, 0, "JPY"), "1500 JPY");
        assert!(format_amount(1, 40, "XXX").contains("base units"));
    }

    #[test]
    fn short_forms() {
        let a = "souk1xr8st0v6lmlfl8t56ryaz7ajws7du4d9mzhjg2zkjgg4v5wap5vqp5jwel";
        assert_eq!(short_address(a), "souk1xr8s…5jwel");
        assert_eq!(short_address("souk1abc"), "souk1abc");
        assert_eq!(short_id(&"ab".repeat(32)), "abababababab");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly ten", 11), "exactly ten");
        assert_eq!(truncate("a longer title here", 10), "a longer …");
        assert_eq!(truncate("line\nbreak", 20), "line break");
        // Wide characters count two columns.
        assert_eq!(truncate("日本語のタイトル", 7), "日本語…");
        assert!(truncate("日本語のタイトル", 7).width() <= 7);
    }

    #[test]
    fn tables_align() {
        let out = table(
            &[("PRICE", Align::Right), ("TITLE", Align::Left)],
            &[
                vec!["85.00 EUR".into(), "Lamp".into()],
                vec!["1.00 EUR".into(), "Ünïcode title".into()],
            ],
        );
        assert_eq!(
            out,
            "    PRICE  TITLE\n85.00 EUR  Lamp\n 1.00 EUR  Ünïcode title\n"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("lamp"), "lamp");
        assert_eq!(shell_quote("home/kitchen"), "home/kitchen");
        assert_eq!(shell_quote("brass lamp"), "'brass lamp'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_time(1_767_225_599), "2025-12-31 23:59 UTC");
    }
}
