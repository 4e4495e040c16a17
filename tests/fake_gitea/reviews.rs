//! Pull-request reviews and mergeability: Gitea's `PullReview` objects (`state`, `stale`,
//! `dismissed`, `commit_id`), `GET /repos/{owner}/{repo}/pulls/{index}/reviews`, and
//! `GET /repos/{owner}/{repo}/commits/{sha}/pull` (the pull request a merge commit merged).
//!
//! As in Gitea: a review is made on the pull request's head commit (`commit_id`); a push to
//! the head marks the reviews made on other commits `stale` (Gitea does so when the push
//! changes the diff, [`Repo::sync_pull`] on every new head); a dismissed review keeps its
//! state and says `dismissed: true`.

use super::*;

/// A review's state, as Gitea's `ReviewStateType` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewState {
    Approved,
    RequestChanges,
    Comment,
    Pending,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Approved => "APPROVED",
            ReviewState::RequestChanges => "REQUEST_CHANGES",
            ReviewState::Comment => "COMMENT",
            ReviewState::Pending => "PENDING",
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct ReviewRec {
    pub(super) id: i64,
    pub(super) repo_id: i64,
    pub(super) index: u64,
    pub(super) reviewer: String,
    pub(super) state: ReviewState,
    pub(super) body: String,
    pub(super) commit_id: String,
    pub(super) stale: bool,
    pub(super) dismissed: bool,
    pub(super) submitted: i64,
}

impl Repo {
    /// `reviewer` reviews pull request `number` at its current head; returns the review id.
    pub fn review(&self, number: u64, reviewer: &str, state: ReviewState) -> i64 {
        let head = self.pull_head(number);
        let mut st = self.shared.lock();
        st.ensure_user(reviewer);
        st.next_review_id += 1;
        let id = st.next_review_id;
        st.reviews.push(ReviewRec {
            id,
            repo_id: self.id,
            index: number,
            reviewer: reviewer.to_owned(),
            state,
            body: String::new(),
            commit_id: head,
            stale: false,
            dismissed: false,
            submitted: now_secs(),
        });
        id
    }

    /// Dismisses a review (a repository admin's action in Gitea).
    pub fn dismiss_review(&self, id: i64) {
        let mut st = self.shared.lock();
        let review = st
            .reviews
            .iter_mut()
            .find(|r| r.id == id && r.repo_id == self.id)
            .unwrap_or_else(|| panic!("no review {id}"));
        review.dismissed = true;
    }

    /// Whether Gitea finds the pull request mergeable (false: say, it conflicts).
    pub fn set_mergeable(&self, number: u64, mergeable: bool) {
        let mut st = self.shared.lock();
        if mergeable {
            st.unmergeable.remove(&(self.id, number));
        } else {
            st.unmergeable.insert((self.id, number));
        }
    }

    /// After a new head: the reviews made on another commit are stale.
    pub(super) fn mark_stale_reviews(&self, number: u64, head: &str) {
        let mut st = self.shared.lock();
        for review in st
            .reviews
            .iter_mut()
            .filter(|r| r.repo_id == self.id && r.index == number && r.commit_id != head)
        {
            review.stale = true;
        }
    }
}

impl View<'_> {
    /// `ToPullReview`.
    pub(super) fn review(&self, r: &RepoRec, review: &ReviewRec) -> Value {
        let html = format!(
            "{}/{}/pulls/{}",
            self.sh.base_url,
            r.full_name(),
            review.index
        );
        json!({
            "id": review.id,
            "user": self.user(&review.reviewer),
            "team": null,
            "state": review.state.as_str(),
            "body": review.body,
            "commit_id": review.commit_id,
            "stale": review.stale,
            "official": review.state != ReviewState::Comment,
            "dismissed": review.dismissed,
            "comments_count": 0,
            "submitted_at": rfc3339(review.submitted, 0),
            "updated_at": rfc3339(review.submitted, 0),
            "html_url": format!("{html}#issuecomment-{}", review.id),
            "pull_request_url": html,
        })
    }
}

/// `GET /repos/{owner}/{repo}/pulls/{index}/reviews`: every review but other users'
/// pending ones (the bot's token sees its own only), oldest first, paged.
pub(super) fn list_reviews(
    shared: &Shared,
    request: &ApiRequest<'_>,
    repo: &RepoRec,
    number: &str,
) -> Reply {
    let state = shared.lock();
    let Some(number) = number
        .parse::<u64>()
        .ok()
        .filter(|n| state.issue(repo.id, *n).is_some_and(|i| i.pull.is_some()))
    else {
        return api_error(shared, 404, "pull request does not exist");
    };
    let view = View::new(shared, &state);
    let items = state
        .reviews
        .iter()
        .filter(|r| r.repo_id == repo.id && r.index == number)
        .filter(|r| r.state != ReviewState::Pending || r.reviewer.eq_ignore_ascii_case(BOT_LOGIN))
        .map(|r| view.review(repo, r))
        .collect();
    let (page, limit) = request.page();
    paged(shared, request, items, page, limit)
}

/// `GET /repos/{owner}/{repo}/commits/{sha}/pull`: the pull request whose merge commit
/// `sha` is (`GetPullRequestByMergedCommit`); 404 for any other commit.
pub(super) fn commit_pull(
    shared: &Shared,
    repo: &RepoRec,
    permission: Permission,
    sha: &str,
) -> Reply {
    let full = shared.resolve_commit(&repo.path, sha);
    let state = shared.lock();
    let merged = state.issues.iter().find(|((repo_id, _), issue)| {
        *repo_id == repo.id
            && issue
                .pull
                .as_ref()
                .and_then(|p| p.merged.as_ref())
                .is_some_and(|m| Some(&m.sha) == full.as_ref())
    });
    match merged {
        Some((_, issue)) => {
            Reply::json(200, View::new(shared, &state).pull(repo, issue, permission))
        }
        None => api_error(shared, 404, "pull request does not exist"),
    }
}
