//! The one HTTP router (axum), served by the local server and by lambda_http.
