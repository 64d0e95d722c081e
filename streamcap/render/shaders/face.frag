#version 330 core
// Textured face, or Lambert-shaded grey for a geometry-only view; the second
// output writes the face's 1-based index for the coverage mask.

uniform sampler2D uv_texture;  // (h, w) RGB8, BGR bytes passed through unchanged
uniform bool textured;
uniform float face_id;         // 1..255
uniform vec3 light_dir;        // unit, image axes (x right, y down, z toward camera)

in vec2 v_texcoord;
in vec3 v_normal;

layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_id;

void main() {
    if (textured) {
        f_color = vec4(texture(uv_texture, v_texcoord).rgb, 1.0);
    } else {
        vec3 n = normalize(v_normal);
        if (n.z < 0.0) n = -n;
        float lambert = max(dot(n, light_dir), 0.0);
        f_color = vec4(vec3(0.85 * (0.2 + 0.8 * lambert)), 1.0);
    }
    f_id = vec4(face_id / 255.0, 0.0, 0.0, 1.0);
}
