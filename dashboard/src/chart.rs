//! Line charts as inline SVG: no script, no library, nothing fetched.

use std::fmt::Write;

use crate::html::esc;

/// One series: its name, CSS class (its colour) and points `(x, y, bad)`; a bad point is drawn
/// as a hollow red mark (a figure the replay did not confirm).
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// CSS class of the line.
    pub class: &'a str,
    /// The points, by increasing x.
    pub points: Vec<(f64, f64, bool)>,
}

const W: f64 = 640.0;
const H: f64 = 240.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 16.0;
const PAD_B: f64 = 36.0;

/// A chart of `series` against a shared x axis labelled `x_label`; `step`: draw as steps (a
/// balance that holds until the next movement) rather than straight lines.
pub fn line_chart(title: &str, x_label: &str, series: &[Series<'_>], step: bool) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, _) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    if x0 > x1 {
        out.push_str(
            "<text x=\"50%\" y=\"50%\" text-anchor=\"middle\">no data</text></svg></figure>",
        );
        return out;
    }
    if (x1 - x0).abs() < f64::EPSILON {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if (y1 - y0).abs() < f64::EPSILON * y1.abs().max(1.0) {
        y0 -= 0.5 * y0.abs().max(1.0);
        y1 += 0.5 * y1.abs().max(1.0);
    }
    let sx = |x: f64| PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R);
    let sy = |y: f64| H - PAD_B - (y - y0) / (y1 - y0) * (H - PAD_T - PAD_B);
    // Axes with five ticks on y, and the ends of x.
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{PAD_L}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{PAD_L}\" y1=\"{PAD_T}\" x2=\"{PAD_L}\" y2=\"{b}\"/>",
        b = H - PAD_B,
        r = W - PAD_R
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{PAD_L}\" y1=\"{py:.1}\" x2=\"{r}\" y2=\"{py:.1}\"/>\
             <text class=\"tick\" x=\"{tx}\" y=\"{py:.1}\" text-anchor=\"end\" dy=\"4\">{}</text>",
            tick(y, y1 - y0),
            py = sy(y),
            r = W - PAD_R,
            tx = PAD_L - 6.0
        );
    }
    let _ = write!(
        out,
        "<text class=\"tick\" x=\"{PAD_L}\" y=\"{ty}\" text-anchor=\"start\">{}</text>\
         <text class=\"tick\" x=\"{r}\" y=\"{ty}\" text-anchor=\"end\">{}</text>\
         <text class=\"tick\" x=\"{mid}\" y=\"{ty}\" text-anchor=\"middle\">{}</text>",
        tick(x0, x1 - x0),
        tick(x1, x1 - x0),
        esc(x_label),
        ty = H - PAD_B + 18.0,
        r = W - PAD_R,
        mid = (PAD_L + W - PAD_R) / 2.0
    );
    for s in series {
        let mut d = String::new();
        let mut last: Option<(f64, f64)> = None;
        for &(x, y, _) in &s.points {
            let (px, py) = (sx(x), sy(y));
            match last {
                None => {
                    let _ = write!(d, "M{px:.1},{py:.1}");
                }
                Some((_, ly)) if step => {
                    let _ = write!(d, " L{px:.1},{ly:.1} L{px:.1},{py:.1}");
                }
                Some(_) => {
                    let _ = write!(d, " L{px:.1},{py:.1}");
                }
            }
            last = Some((px, py));
        }
        if step {
            if let Some((_, ly)) = last {
                let _ = write!(d, " L{:.1},{ly:.1}", W - PAD_R);
            }
        }
        let _ = write!(
            out,
            "<path class=\"line {}\" d=\"{d}\"><title>{}</title></path>",
            esc(s.class),
            esc(s.name)
        );
        if !step {
            for &(x, y, bad) in &s.points {
                let _ = write!(
                    out,
                    "<circle class=\"dot {}{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>{}: {} at {}</title></circle>",
                    esc(s.class),
                    if bad { " bad" } else { "" },
                    sx(x),
                    sy(y),
                    if bad { 5 } else { 3 },
                    esc(s.name),
                    tick(y, (y1 - y0) / 10.0),
                    tick(x, 1.0)
                );
            }
        }
    }
    out.push_str("</svg><div class=\"legend\">");
    for s in series {
        let _ = write!(
            out,
            "<span class=\"key {}\"></span>{} ",
            esc(s.class),
            esc(s.name)
        );
    }
    out.push_str("</div></figure>");
    out
}

/// A tick label with as many decimals as the range needs.
fn tick(v: f64, range: f64) -> String {
    if range >= 10.0 || v.fract() == 0.0 && range >= 1.0 {
        format!("{v:.0}")
    } else if range >= 1.0 {
        format!("{v:.1}")
    } else if range >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_every_point_and_marks_the_bad_ones() {
        let svg = line_chart(
            "accuracy",
            "round",
            &[Series {
                name: "accuracy",
                class: "acc",
                points: vec![(1.0, 0.9, false), (2.0, 0.95, true), (3.0, 0.97, false)],
            }],
            false,
        );
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches(" bad\"").count(), 1);
        assert!(svg.starts_with("<figure") && svg.ends_with("</figure>"));
    }

    #[test]
    fn an_empty_or_flat_chart_does_not_divide_by_zero() {
        let empty = line_chart("x", "round", &[], false);
        assert!(empty.contains("no data"));
        let flat = line_chart(
            "balance",
            "record",
            &[Series {
                name: "a",
                class: "c0",
                points: vec![(5.0, 100.0, false)],
            }],
            true,
        );
        assert!(!flat.contains("NaN") && !flat.contains("inf"), "{flat}");
    }
}
