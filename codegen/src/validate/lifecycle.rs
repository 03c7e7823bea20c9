//! Machine-type lifecycle by age: release dates and the `[lifecycle]` rule
//! of `compat/releases.toml` decide which machine types are deprecated or
//! removed at the newest release (the one this tree builds).

use super::loc;
use crate::ast::FileAst;
use crate::diag::{Diag, Loc};
use crate::model::{DateM, FamilyM, LifecycleM, LifecycleRuleM, ReleaseM};
use toml::Spanned;
use toml::value::Datetime;

/// A release's `date`: a plain TOML date (no time, no offset).
pub fn date(file: usize, d: &Spanned<Datetime>, diags: &mut Vec<Diag>) -> Option<DateM> {
    let v = d.get_ref();
    match (v.date, v.time, v.offset) {
        (Some(day), None, None) => Some((day.year, day.month, day.day)),
        _ => {
            diags.push(
                Diag::error(
                    "compat::bad-value",
                    &loc(file, d),
                    format!("release date `{v}` is not a plain date"),
                    "here",
                )
                .help("write the day the release was published, e.g. `date = 2024-04-23`"),
            );
            None
        }
    }
}

/// The tree's `[lifecycle]` rule (at most one) and where it is.
pub fn rule(files: &[FileAst], diags: &mut Vec<Diag>) -> Option<(LifecycleRuleM, Loc)> {
    let mut found: Option<(LifecycleRuleM, Loc)> = None;
    for (file, f) in files.iter().enumerate() {
        let Some(r) = &f.lifecycle else { continue };
        let here = loc(file, r);
        if let Some((_, first)) = &found {
            diags.push(
                Diag::error(
                    "compat::duplicate",
                    &here,
                    "a second [lifecycle] rule",
                    "second rule",
                )
                .label(first, "first rule")
                .help("the tree has one lifecycle rule"),
            );
            continue;
        }
        let a = r.get_ref();
        if a.deprecated_after_years == 0 || a.deprecated_after_years >= a.removed_after_years {
            diags.push(
                Diag::error(
                    "compat::bad-value",
                    &here,
                    format!(
                        "deprecated_after_years ({}) must be at least 1 and below removed_after_years ({})",
                        a.deprecated_after_years, a.removed_after_years
                    ),
                    "this rule",
                )
                .help("a machine type is deprecated before it is removed"),
            );
            continue;
        }
        found = Some((
            LifecycleRuleM {
                deprecated_after_years: a.deprecated_after_years,
                removed_after_years: a.removed_after_years,
            },
            here,
        ));
    }
    found
}

/// `d` plus `years` (29 February stays 29 February: only the year moves,
/// so the comparison below is "more than `years` old" to the day).
fn plus_years(d: DateM, years: u16) -> DateM {
    (d.0.saturating_add(years), d.1, d.2)
}

/// Sets each machine type's lifecycle from its age at the newest release:
/// older than `removed_after_years` → removed, older than
/// `deprecated_after_years` → deprecated, `since` the first release dated
/// past the limit. A lifecycle declared in `machines.toml` stays when it is
/// at least as strict as the rule's.
pub fn apply(
    (rule, at): &(LifecycleRuleM, Loc),
    releases: &[ReleaseM],
    families: &mut [FamilyM],
    diags: &mut Vec<Diag>,
) {
    let undated: Vec<&str> = releases
        .iter()
        .filter(|r| r.date.is_none())
        .map(|r| r.version.as_str())
        .collect();
    if !undated.is_empty() {
        diags.push(
            Diag::error(
                "compat::missing-date",
                at,
                format!(
                    "the lifecycle rule needs the date of every release; undated: {}",
                    undated.join(", ")
                ),
                "this rule",
            )
            .help("add `date = YYYY-MM-DD` to each [[release]]"),
        );
        return;
    }
    let dated: Vec<(&str, DateM)> = releases
        .iter()
        .filter_map(|r| r.date.map(|d| (r.version.as_str(), d)))
        .collect();
    let Some(&(_, now)) = dated.last() else {
        return;
    };
    // The first release (in release order) dated after `limit`.
    let first_after = |limit: DateM| {
        dated
            .iter()
            .find(|(_, d)| *d > limit)
            .map(|(v, _)| (*v).to_string())
    };
    for f in families.iter_mut() {
        for m in &mut f.machines {
            let Some(&(_, born)) = dated.iter().find(|(v, _)| *v == m.introduced_in) else {
                continue; // an unknown release is reported by the machine's own check
            };
            let removed = plus_years(born, rule.removed_after_years);
            let deprecated = plus_years(born, rule.deprecated_after_years);
            let computed = if now > removed {
                first_after(removed).map(|since| LifecycleM::Removed {
                    since,
                    reason: rule.removed_reason(),
                })
            } else if now > deprecated {
                first_after(deprecated).map(|since| LifecycleM::Deprecated {
                    since,
                    reason: rule.deprecated_reason(),
                })
            } else {
                None
            };
            if let Some(c) = computed
                && c.rank() > m.lifecycle.rank()
            {
                m.lifecycle = c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_n_years_is_to_the_day() {
        let born = (2022, 12, 14);
        assert_eq!(plus_years(born, 3), (2025, 12, 14));
        assert!(
            (2025, 12, 23) > plus_years(born, 3),
            "9 days over: deprecated"
        );
        assert!(
            (2025, 12, 14) <= plus_years(born, 3),
            "exactly 3 years: not yet"
        );
        assert!((2025, 4, 23) > plus_years((2022, 4, 19), 3));
        assert!((2025, 4, 23) <= plus_years((2022, 8, 30), 3));
    }
}
