// What GET /chat/config.json tells the page about the node (crates/api/src/http/chat.rs).
export interface ChatConfig {
  ws_url: string | null;
  dev_login: boolean;
  appcodes: number[];
  max_body_bytes: number;
  max_content_bytes: number;
  dev_token_ttl_secs: number;
}
