//! Compiling a route: its match, target, headers and `allow` rule.

use super::*;
use crate::quota::RateLimit;

impl Compiler {
    pub(super) fn route(
        &mut self,
        file: &Path,
        at: Origin,
        doc: RouteDoc,
    ) -> Option<(Vec<Segment>, Route)> {
        let before = self.errs.len();
        let name = doc.name;
        let ctx = |m: String| format!("route `{name}`: {m}");
        let segments = parse_template(&doc.matcher.path)
            .map_err(|e| self.errs.push(at.clone(), ctx(e)))
            .ok();
        let methods = doc.matcher.methods.map(|list| {
            list.iter()
                .filter_map(|m| {
                    let upper = m.to_ascii_uppercase();
                    Method::from_bytes(upper.as_bytes())
                        .map_err(|_| {
                            self.errs
                                .push(at.clone(), ctx(format!("`{m}` is not an HTTP method")))
                        })
                        .ok()
                })
                .collect::<Vec<_>>()
        });
        let host = doc
            .matcher
            .host
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let webhook = doc.webhook == Some(WebhookKind::Hasura);
        let upstream = match (&doc.upstream, webhook) {
            (Some(u), false) => match self.upstreams.get(u) {
                Some((_, up)) => Some(up.clone()),
                None => {
                    self.errs
                        .push(at.clone(), ctx(format!("upstream `{u}` is not defined")));
                    None
                }
            },
            (Some(_), true) => {
                self.errs.push(
                    at.clone(),
                    ctx("a webhook route answers itself: drop `upstream`".into()),
                );
                None
            }
            (None, true) => None,
            (None, false) => {
                self.errs
                    .push(at.clone(), ctx("needs an `upstream`".into()));
                None
            }
        };
        let hasura = match doc.hasura.as_ref().map(|h| self.hasura(file, h)) {
            None => None,
            Some(Ok(h)) => Some(Arc::new(h)),
            Some(Err(e)) => {
                self.errs.push(at.clone(), ctx(format!("hasura: {e}")));
                None
            }
        };
        if webhook && doc.hasura.is_none() {
            self.errs.push(
                at.clone(),
                ctx("`webhook: hasura` needs a `hasura:` block".into()),
            );
        }
        if doc.hasura.is_some() && doc.public {
            self.errs.push(
                at.clone(),
                ctx("a public route has no claims for hasura".into()),
            );
        }
        if hasura.is_some() && !self.prefixes.iter().any(|p| p == "x-hasura-") {
            // No client ever sends an X-Hasura-* header upstream, on any route.
            self.prefixes.push("x-hasura-".into());
        }
        if let Some(list) = &doc.issuers {
            for i in list {
                if self.issuers.by_name(i).is_none() {
                    self.errs
                        .push(at.clone(), ctx(format!("issuer `{i}` is not defined")));
                }
            }
        }
        if !doc.public && self.issuers.is_empty() && self.issuer_origin.is_empty() {
            self.errs.push(
                at.clone(),
                ctx("is not public but no issuer is defined".into()),
            );
        }
        if doc.public && doc.allow.is_some() {
            self.errs.push(
                at.clone(),
                ctx("a public route cannot have an `allow` rule".into()),
            );
        }
        let params = segments.as_deref().map(param_names).unwrap_or_default();
        let allow = doc.allow.and_then(|r| self.rule(file, &r, &params));
        // Defaults first; a route's own template replaces a default of the same name.
        let mut forward: Vec<HeaderTemplate> = Vec::new();
        if !doc.public {
            forward = self.defaults.clone();
            for (hname, text) in &doc.forward {
                if let Some(t) = self.template(file, hname, text, &params) {
                    forward.retain(|d| d.name != t.name);
                    forward.push(t);
                }
            }
        } else if let Some((hname, text)) = doc.forward.iter().next() {
            self.errs.push(
                origin(file, text),
                ctx(format!(
                    "a public route has no claims to forward (header `{hname}`)"
                )),
            );
        }
        let claims_header = match &doc.claims_header {
            None => None,
            Some(h) => match h.parse::<http::HeaderName>() {
                Ok(h) if !doc.public => Some(h),
                Ok(_) => {
                    self.errs.push(
                        at.clone(),
                        ctx("a public route has no claims for claims_header".into()),
                    );
                    None
                }
                Err(_) => {
                    self.errs
                        .push(at.clone(), ctx(format!("`{h}` is not a header name")));
                    None
                }
            },
        };
        if doc.public && !doc.rate_limits.is_empty() {
            self.errs.push(
                at.clone(),
                ctx("a public route has no verified claims to key rate limits on".into()),
            );
        }
        let rate_limits: Vec<RateLimit> = doc
            .rate_limits
            .iter()
            .filter_map(|l| {
                self.rate_limit(l, &params)
                    .map_err(|e| {
                        let m = ctx(format!("rate limit `{}`: {e}", l.value.name));
                        self.errs.push(origin(file, l), m)
                    })
                    .ok()
            })
            .collect();
        let mut names: Vec<&str> = rate_limits.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            self.errs
                .push(at.clone(), ctx("two rate limits share a name".into()));
        }
        let cors = doc.cors.map(|c| {
            let parse = |m: &String| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok();
            let methods = match &c.methods {
                Some(list) => list.iter().filter_map(parse).collect(),
                None => methods
                    .clone()
                    .unwrap_or_else(|| vec![Method::GET, Method::HEAD, Method::POST]),
            };
            if c.origins.iter().any(|o| o == "*") && c.credentials {
                self.errs.push(
                    at.clone(),
                    ctx("cors: `credentials: true` needs named origins, not `*`".into()),
                );
            }
            Arc::new(crate::forward::cors::Cors {
                origins: c.origins,
                methods,
                headers: c
                    .headers
                    .unwrap_or_else(|| vec!["authorization".into(), "content-type".into()])
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                expose: c.expose_headers,
                credentials: c.credentials,
                max_age: c.max_age,
            })
        });
        if self.errs.len() != before {
            return None;
        }
        let segments = segments?;
        let route = Route {
            empty_claims: doc.empty_claims.unwrap_or_default(),
            claims_header,
            name,
            template: doc.matcher.path,
            methods,
            host,
            target: if webhook {
                Target::HasuraWebhook
            } else {
                Target::Upstream(upstream?)
            },
            hasura,
            public: doc.public,
            issuers: doc.issuers,
            allow,
            forward,
            pass_authorization: doc.pass_authorization,
            trust_rewrite_headers: doc.trust_rewrite_headers,
            params,
            rate_limits,
            websocket_outlives_token: doc.websocket_outlives_token,
            cors,
        };
        Some((segments, route))
    }

    fn rule(&mut self, file: &Path, doc: &Spanned<RuleDoc>, params: &[String]) -> Option<Rule> {
        let at = origin(file, doc);
        let d = &doc.value;
        let set = |list: &[(&'static str, bool)]| -> Vec<&'static str> {
            list.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
        };
        let forms = set(&[
            ("all", d.all.is_some()),
            ("any", d.any.is_some()),
            ("not", d.not.is_some()),
            ("claim", d.claim.is_some()),
            ("role", d.role.is_some()),
            ("permission", d.permission.is_some()),
            ("scope", d.scope.is_some()),
            ("tenant_role", d.tenant_role.is_some()),
            ("tenant_permission", d.tenant_permission.is_some()),
        ]);
        let ops = set(&[
            ("equals", d.equals.is_some()),
            ("in", d.one_of.is_some()),
            ("contains", d.contains.is_some()),
            ("contains_any", d.contains_any.is_some()),
            ("contains_all", d.contains_all.is_some()),
            ("exists", d.exists.is_some()),
            ("matches", d.matches.is_some()),
            ("gt", d.gt.is_some()),
            ("gte", d.gte.is_some()),
            ("lt", d.lt.is_some()),
            ("lte", d.lte.is_some()),
            ("at_least", d.at_least.is_some()),
        ]);
        if forms.len() != 1 {
            let found = if forms.is_empty() {
                "none".to_string()
            } else {
                forms.join(", ")
            };
            self.errs.push(at, format!("a rule is exactly one of `all`, `any`, `not`, `claim` (with one operator), `role`, `permission`, `scope`, `tenant_role`, `tenant_permission` (found: {found})"));
            return None;
        }
        if d.claim.is_none() && !ops.is_empty() {
            self.errs
                .push(at, format!("`{}` goes with `claim`", ops.join("`, `")));
            return None;
        }
        if d.levels.is_some() && d.at_least.is_none() {
            self.errs.push(at, "`levels` goes with `at_least`");
            return None;
        }
        let many = |c: &mut Self, list: &[Spanned<RuleDoc>]| -> Option<Vec<Rule>> {
            let rules: Vec<Option<Rule>> = list.iter().map(|r| c.rule(file, r, params)).collect();
            rules.into_iter().collect()
        };
        match forms[0] {
            "all" => many(self, d.all.as_deref()?).map(Rule::All),
            "any" => many(self, d.any.as_deref()?).map(Rule::Any),
            "not" => self
                .rule(file, d.not.as_deref()?, params)
                .map(|r| Rule::Not(Box::new(r))),
            "role" => self.need(&at, "role", d.role.as_ref()?).map(Rule::Role),
            "permission" => self
                .need(&at, "permission", d.permission.as_ref()?)
                .map(Rule::Permission),
            "scope" => self.need(&at, "scope", d.scope.as_ref()?).map(Rule::Scope),
            "tenant_role" => self.tenant(&at, TenantKind::Roles, d.tenant_role.as_ref()?, params),
            "tenant_permission" => self.tenant(
                &at,
                TenantKind::Permissions,
                d.tenant_permission.as_ref()?,
                params,
            ),
            _ => self.claim_rule(at, d, &ops, params),
        }
    }

    fn claim_rule(
        &mut self,
        at: Origin,
        d: &RuleDoc,
        ops: &[&str],
        params: &[String],
    ) -> Option<Rule> {
        let text = d.claim.as_deref().unwrap_or_default();
        let path = ClaimPath::compile(text, &self.untrusted)
            .map_err(|e| self.errs.push(at.clone(), e))
            .ok()?;
        if ops.len() != 1 {
            self.errs.push(
                at,
                format!("claim `{text}` needs exactly one operator: `equals`, `in`, `contains`, `contains_any`, `contains_all`, `exists`, `matches`, `gt`, `gte`, `lt`, `lte` or `at_least`"),
            );
            return None;
        }
        let mut fail = |m: String| {
            self.errs.push(at.clone(), format!("claim `{text}`: {m}"));
        };
        let operand = |v: &serde_json::Value| -> Result<Operand, String> {
            match v {
                serde_json::Value::String(s) => Ok(match RequestValue::parse(s, params)? {
                    Some(r) => Operand::Request(r),
                    None => Operand::Literal(v.clone()),
                }),
                _ => Ok(Operand::Literal(v.clone())),
            }
        };
        let non_empty = |name: &str, v: &Vec<serde_json::Value>| {
            if v.is_empty() {
                Err(format!("`{name}` needs at least one value"))
            } else {
                Ok(v.clone())
            }
        };
        let op = match ops[0] {
            "equals" => operand(d.equals.as_ref()?).map(Op::Equals),
            "in" => non_empty("in", d.one_of.as_ref()?).map(Op::In),
            "contains" => operand(d.contains.as_ref()?).map(Op::Contains),
            "contains_any" => {
                non_empty("contains_any", d.contains_any.as_ref()?).map(Op::ContainsAny)
            }
            "contains_all" => {
                non_empty("contains_all", d.contains_all.as_ref()?).map(Op::ContainsAll)
            }
            "exists" => Ok(Op::Exists(d.exists?)),
            "matches" => {
                let re = d.matches.as_deref()?;
                regex::RegexBuilder::new(&format!("^(?:{re})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map(Op::Matches)
                    .map_err(|e| {
                        // The regex crate's message is several lines with a
                        // caret under the fault; its last line says what.
                        let e = e.to_string();
                        let what = e.lines().last().unwrap_or_default();
                        let what = what.trim_start_matches("error: ");
                        format!("`{re}` is not a regex: {what}")
                    })
            }
            "gt" => Ok(Op::Compare(Cmp::Gt, d.gt?)),
            "gte" => Ok(Op::Compare(Cmp::Gte, d.gte?)),
            "lt" => Ok(Op::Compare(Cmp::Lt, d.lt?)),
            "lte" => Ok(Op::Compare(Cmp::Lte, d.lte?)),
            _ => {
                let level = d.at_least.as_deref()?;
                let levels = match &d.levels {
                    None => Err(
                        "`at_least` needs `levels`: a name from the file's `levels` or a list"
                            .to_string(),
                    ),
                    Some(LevelsRef::Named(name)) => {
                        self.levels.get(name).cloned().ok_or_else(|| {
                            format!("levels `{name}` are not defined (top-level `levels:`)")
                        })
                    }
                    Some(LevelsRef::Inline(list)) => Ok(Arc::new(list.clone())),
                };
                levels.and_then(|levels| match levels.iter().position(|l| l == level) {
                    Some(rank) => Ok(Op::AtLeast { levels, rank }),
                    None => Err(format!("`{level}` is not one of the levels {levels:?}")),
                })
            }
        };
        match op {
            Ok(op) => Some(Rule::Claim { path, op }),
            Err(e) => {
                fail(e);
                None
            }
        }
    }

    /// `admin`, `{any_of: [...]}` or `{all_of: [...]}`.
    fn need(&mut self, at: &Origin, what: &str, doc: &NeedDoc) -> Option<Need> {
        let need = match doc {
            NeedDoc::One(s) => Ok(Need::AnyOf(vec![s.clone()])),
            NeedDoc::Set(set) => need_set(&set.any_of, &set.all_of),
        };
        need.map_err(|e| self.errs.push(at.clone(), format!("`{what}`: {e}")))
            .ok()
    }

    fn tenant(
        &mut self,
        at: &Origin,
        kind: TenantKind,
        doc: &TenantNeedDoc,
        params: &[String],
    ) -> Option<Rule> {
        let what = match kind {
            TenantKind::Roles => "tenant_role",
            TenantKind::Permissions => "tenant_permission",
        };
        let tenant = if doc.tenant == "current" {
            Ok(TenantFrom::Current)
        } else {
            RequestValue::parse(&doc.tenant, params).map(|r| match r {
                Some(r) => TenantFrom::Request(r),
                None => TenantFrom::Literal(doc.tenant.clone()),
            })
        };
        let need = need_set(&doc.any_of, &doc.all_of);
        match (tenant, need) {
            (Ok(tenant), Ok(need)) => Some(Rule::Tenant { kind, tenant, need }),
            (Err(e), _) | (_, Err(e)) => {
                self.errs.push(at.clone(), format!("`{what}`: {e}"));
                None
            }
        }
    }
}

fn need_set(any_of: &Option<Vec<String>>, all_of: &Option<Vec<String>>) -> Result<Need, String> {
    match (any_of, all_of) {
        (Some(v), None) if !v.is_empty() => Ok(Need::AnyOf(v.clone())),
        (None, Some(v)) if !v.is_empty() => Ok(Need::AllOf(v.clone())),
        _ => Err("give exactly one of `any_of` and `all_of`, with at least one name".into()),
    }
}
