//! `admin:`: where the admin API listens and the token that guards it.

use super::Checker;
use crate::config::de::Spanned;
use crate::config::file::AdminFile;
use crate::config::model::Admin;
use crate::config::{defaults, files};

impl Checker<'_> {
    pub(super) fn admin(&mut self, admin: Option<&Spanned<AdminFile>>) -> Admin {
        let default_addr = defaults::ADMIN_ADDR;
        let Some(admin) = admin else {
            return Admin {
                addr: default_addr,
                token: None,
            };
        };
        let addr = match &admin.value.addr {
            Some(addr) => self.socket_addr(addr).unwrap_or(default_addr),
            None => default_addr,
        };
        let token = match &admin.value.token_file {
            None => None,
            Some(file) => {
                let path = self.path(&file.value);
                self.read.push(path.clone());
                match files::token(&path) {
                    Ok(token) => Some(token),
                    Err(message) => {
                        self.error(file.mark, message);
                        None
                    }
                }
            }
        };
        if !addr.ip().is_loopback() && admin.value.token_file.is_none() {
            let mark = admin.value.addr.as_ref().map_or(admin.mark, |a| a.mark);
            self.error(
                mark,
                format!(
                    "the admin API on `{addr}` is reachable from other hosts: set `token_file`, \
                     or listen on 127.0.0.1"
                ),
            );
        }
        Admin { addr, token }
    }
}
