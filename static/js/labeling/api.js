// JSON calls to the labeling API with the page's CSRF token; every answer resolves to {ok, status, body}.

export function jsonApi(csrf) {
  return async (method, url, body) => {
    const response = await fetch(url, {
      method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json"},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data;
    try {
      data = await response.json();
    } catch (err) {
      data = {};   // an empty or non-JSON body still tells its status
    }
    return {ok: response.ok, status: response.status, body: data};
  };
}
